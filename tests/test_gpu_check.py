"""benches/gpu_check.sh's logic, without a GPU: its --dry-run takes the same steps on the CPU
(feed cases, trainer runs that must lower the loss and resume, torchrun) at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))

import gpu_check  # noqa: E402


def test_gpu_check_dry_run_takes_every_step(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    done = subprocess.run(
        ["bash", str(ROOT / "benches" / "gpu_check.sh"), "--dry-run", "--work",
         str(tmp_path / "work"), "--results", str(tmp_path), "--readme", str(readme)],
        capture_output=True, text=True, timeout=420,
        env={**os.environ, "PY": sys.executable},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads((tmp_path / "gpu_check_cpu-dry-run.json").read_text())
    assert r["dry_run"] and r["all_ok"]
    feed = r["gpu_feed"]
    for key in ("ceiling", "fastmask_uint8", "fastmask_float", "fastmask_gpu_decode",
                "torchvision_pil"):  # fmt: skip
        assert feed[key] > 0, key
    assert set(r["train"]) == {"amp_fp16", "amp_bf16", "channels_last", "compile"}
    for name in ("amp_bf16", "channels_last"):
        t = r["train"][name]
        assert t["ok"] and t["resumed"] and t["loss_falls"] and len(t["train_loss"]) == 3
    assert "skipped" in r["train"]["amp_fp16"] and "skipped" in r["train"]["compile"]
    assert r["ddp_probe"]["ok"] and r["torchrun_train"]["ok"]
    assert readme.read_text() == "# x\n"  # a dry run never writes the README's GPU table


def test_readme_table_replaces_its_block(tmp_path: Path):
    r = {"gpu": "H200", "date": "2026-01-01", "dry_run": False,
         "gpu_feed": {"ceiling": 2000.0, "fastmask_uint8": 1950.0, "torchvision_pil": 150.0},
         "train": {"amp_fp16": {"loss_falls": True, "resumed": True, "seconds": 30.0}},
         "ddp_probe": {"ok": True, "seconds": 5.0},
         "torchrun_train": {"ok": True, "seconds": 40.0}}  # fmt: skip
    readme = tmp_path / "README.md"
    readme.write_text("intro\n")
    gpu_check.write_readme(readme, gpu_check.readme_table(r))
    r["gpu_feed"]["fastmask_uint8"] = 1900.0
    gpu_check.write_readme(readme, gpu_check.readme_table(r))
    text = readme.read_text()
    assert text.count(gpu_check.MARK_BEGIN) == 1 and "| 1900 | 95% |" in text
    assert text.startswith("intro\n") and "| 1950 |" not in text
