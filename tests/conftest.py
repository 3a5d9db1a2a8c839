"""Shared fixtures: tiny data sets in the real layout, with the real quirks."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("WANDB_MODE", "disabled")

# Tiny training flags: resnet18 from random weights on 48-pixel images, one torch thread (two
# OpenMP threads spin badly when the loader or anything else shares 2 cores).
TINY_TRAIN = [
    "--model", "resnet18", "--no-pretrained", "--image-size", "48", "--batch-size", "16",
    "--lr", "1e-3", "--threads", "2", "--prefetch", "2", "--torch-threads", "1",
    "--epochs", "1", "--max-steps", "3",
]  # fmt: skip

# Three task models, two folds, two epochs each: small enough for 2 busy cores.
TINY_RECIPE = """
description = "tiny"
tasks = ["mask", "gender", "age"]
folds = 2
seed = 1
tune_bias = true

[train]
model = "resnet18"
pretrained = false
image_size = 32
batch_size = 16
lr = 1e-3
epochs = 2
max_steps = 2
threads = 2
prefetch = 2
torch_threads = 1
wandb = "disabled"

[predict]
tta = true
batch_size = 32
"""

STEMS = ["mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal"]


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (12, 16), value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def write_person(
    images: Path, folder: str, exts: list[str] | None = None, stems: list[str] | None = None
) -> Path:
    """A person folder with one tiny image per stem; exts per stem (default .jpg)."""
    d = images / folder
    d.mkdir(parents=True)
    stems = STEMS if stems is None else stems
    exts = exts or [".jpg"] * len(stems)
    for stem, ext in zip(stems, exts, strict=True):
        fmt = "PNG" if ext.lower() == ".png" else "JPEG"
        (d / f"{stem}{ext}").write_bytes(image_bytes(fmt))
    return d


def write_train_csv(train: Path, folders: list[str]) -> None:
    lines = ["id,gender,race,age,path"]
    for f in folders:
        pid, gender, race, age = f.split("_")
        lines.append(f"{pid},{gender},{race},{age},{f}")
    (train / "train.csv").write_text("\n".join(lines) + "\n")


QUIRKY_PEOPLE = {
    # folder name -> extensions of the 7 stems
    "000001_female_Asian_45": [".jpg"] * 7,
    "000002_male_Asian_18": [".png"] * 7,
    "000003_female_Asian_60": [".jpeg"] * 7,
    "000004_male_Asian_29": [".jpg", ".jpeg", ".jpg", ".JPG", ".jpg", ".jpeg", ".jpg"],
    "001498-1_male_Asian_20": [".jpg"] * 7,  # suffixed id, and a known gender error
    "003397_female_Asian_20": [".jpg"] * 7,  # one id, two folders: two people
    "003397_female_Asian_19": [".jpg"] * 7,
    "000020_female_Asian_35": [".jpg"] * 7,  # known swap of incorrect_mask and normal
    "004348_male_Asian_59": [".jpg"] * 7,  # known age error: really 60
    "000010_male_Asian_58": [".jpg"] * 7,
}


@pytest.fixture
def quirky_data(tmp_path: Path) -> Path:
    """DATA/ with train (10 people, mixed extensions, junk files) and eval (5 images)."""
    data = tmp_path / "DATA"
    images = data / "train" / "images"
    images.mkdir(parents=True)
    for folder, exts in QUIRKY_PEOPLE.items():
        d = write_person(images, folder, exts)
        (d / "._mask1.jpg").write_bytes(b"\x00\x05\x16\x07junk")
    (images / "._000001_female_Asian_45").write_bytes(b"\x00\x05\x16\x07junk")
    (data / "train" / "._train.csv").write_bytes(b"junk")
    write_train_csv(data / "train", list(QUIRKY_PEOPLE))
    ev = data / "eval" / "images"
    ev.mkdir(parents=True)
    ids = [f"{i:040x}" for i in (5, 3, 9, 1, 7)]
    for i in ids:
        (ev / f"{i}.jpg").write_bytes(image_bytes())
    (ev / "._junk.jpg").write_bytes(b"junk")
    (data / "eval" / "info.csv").write_text("ImageID,ans\n" + "".join(f"{i}.jpg,0\n" for i in ids))
    return data


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic DATA/ (30 people, 4 eval people) and one tiny run per task, trained once."""
    from fastmask import cli
    from fastmask.synth import write_synthetic

    root = tmp_path_factory.mktemp("tiny_runs")
    data = root / "DATA"
    write_synthetic(data, people=30, eval_people=4, seed=3, workers=2)
    out = {"data": data}
    for task in ("mask", "gender", "age", "multi"):
        run = root / "runs" / task
        assert cli.main(["train", task, "--data", str(data), "--out", str(run), *TINY_TRAIN]) == 0
        out[task] = run
    return out
