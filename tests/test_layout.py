"""The package's shape: inference does not load the trainer; one schema; modules stay short."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fastmask
from fastmask import schema

PACKAGE = Path(fastmask.__file__).parent


def test_inference_modules_do_not_import_the_training_loop():
    code = (
        "import sys, fastmask.predict, fastmask.export, fastmask.classify, fastmask.combine\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('fastmask.train.'))\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    loaded = set(filter(None, out.split(",")))
    # The config (what a checkpoint records) and the run files (how to read one) only.
    assert loaded <= {"fastmask.train.config", "fastmask.train.runfiles", "fastmask.train.cli"}
    assert "fastmask.train.loop" not in loaded and "fastmask.train.runtime" not in loaded


def test_schema_encodes_the_18_classes_and_heads():
    assert schema.NUM_CLASSES["class"] == 18
    assert schema.heads("multi") == ("mask", "gender", "age")
    assert schema.heads("age") == ("age",)
    names = schema.class_names()
    assert len(names) == 18 and names[0] == "wear/male/<30" and names[17] == "not_wear/female/>=60"
    for cls in range(18):
        assert schema.encode_class(*schema.decode_class(cls)) == cls
    assert schema.prediction_columns("multi")["age"] == ["age_p0", "age_p1", "age_p2"]
    assert schema.prediction_columns("gender") == {"gender": ["p0", "p1"]}
    assert schema.label_maps("multi")["class"] == names


def test_no_python_module_is_over_800_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 800
    }
    assert not long, f"modules over 800 lines: {long}"
