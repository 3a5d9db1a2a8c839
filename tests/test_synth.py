"""The synthetic data set: the real layout and quirks (DATASET.md), determinism, bad args."""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from fastmask import synth
from fastmask.errors import FastmaskError

STEMS = ["mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal"]
FOLDER_RE = re.compile(
    r"^(?P<id>\d{6}(-\d+)?)_(?P<gender>male|female)_(?P<race>Asian)_(?P<age>\d+)$"
)
EVAL_NAME_RE = re.compile(r"^[0-9a-f]{40}\.jpg$")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_labels_and_quirks(tmp_path: Path) -> None:
    out = tmp_path / "DATA"
    summary = synth.write_synthetic(out, people=50, eval_people=3, seed=1, workers=1)
    assert (summary.people, summary.train_images) == (50, 350)
    assert (summary.eval_people, summary.eval_images) == (3, 21)
    assert sorted(p.name for p in out.iterdir()) == ["eval", "train"]
    assert sorted(p.name for p in (out / "train").iterdir()) == ["images", "train.csv"]
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["images", "info.csv", "truth.csv"]

    # train: one folder per person named {id}_{gender}_{race}_{age}, matching train.csv
    images = out / "train" / "images"
    folders = sorted(p for p in images.iterdir() if p.is_dir())
    assert len(folders) == 50
    rows = read_csv(out / "train" / "train.csv")
    assert list(rows[0]) == ["id", "gender", "race", "age", "path"]
    assert sorted(r["path"] for r in rows) == [f.name for f in folders]
    for r in rows:
        m = FOLDER_RE.match(r["path"])
        assert m, r["path"]
        assert (m["id"], m["gender"], m["race"], m["age"]) == (
            r["id"],
            r["gender"],
            r["race"],
            r["age"],
        )
        assert 18 <= int(r["age"]) <= 60
    ids = Counter(r["id"] for r in rows)
    assert any("-" in i for i in ids), "no suffixed id like 001498-1"
    dup = [i for i, n in ids.items() if n > 1]
    assert len(dup) == 1, "one id in two folders (like 003397)"
    assert len({r["age"] for r in rows if r["id"] == dup[0]}) == 2

    # 7 images per folder, by stem; mixed extensions; junk `._*` files at every level
    exts: Counter[str] = Counter()
    samplings: set[int] = set()
    progressive = 0
    for folder in folders:
        files = [p for p in folder.iterdir() if not p.name.startswith(".")]
        assert sorted(p.stem for p in files) == sorted(STEMS)
        exts.update(p.suffix for p in files)
        for p in files:
            with Image.open(p) as im:
                assert (im.size, im.mode) == ((384, 512), "RGB")
                assert im.format == ("PNG" if p.suffix == ".png" else "JPEG")
                if im.format == "JPEG":
                    assert isinstance(im, JpegImagePlugin.JpegImageFile)
                    samplings.add(JpegImagePlugin.get_sampling(im))
                    progressive += bool(im.info.get("progressive"))
    assert {".jpg", ".png", ".jpeg"} <= set(exts) and exts[".jpg"] > 0.8 * sum(exts.values())
    assert any(
        {p.suffix for p in f.iterdir() if not p.name.startswith(".")} == {".jpg", ".jpeg"}
        for f in folders
    ), "no folder mixing .jpg and .jpeg"
    assert {0, 2} <= samplings and progressive > 0  # 4:4:4, 4:2:0 and progressive JPEGs
    beside = [p for p in images.iterdir() if p.name.startswith("._")]
    inside = [p for f in folders for p in f.iterdir() if p.name.startswith("._")]
    assert beside and inside
    assert all(p.is_file() for p in beside + inside)
    with pytest.raises(UnidentifiedImageError):
        Image.open(inside[0])

    # eval: 40-hex .jpg names, info.csv and truth.csv aligned, classes consistent
    ev = out / "eval" / "images"
    info = read_csv(out / "eval" / "info.csv")
    truth = read_csv(out / "eval" / "truth.csv")
    assert list(info[0]) == ["ImageID", "ans"] and list(truth[0]) == ["ImageID", "ans"]
    assert [r["ImageID"] for r in info] == [r["ImageID"] for r in truth]
    assert len(info) == 21 and {r["ans"] for r in info} == {"0"}
    assert all(EVAL_NAME_RE.match(r["ImageID"]) for r in info)
    eval_files = sorted(p.name for p in ev.iterdir() if not p.name.startswith("."))
    assert eval_files == sorted(r["ImageID"] for r in info)
    assert any(p.name.startswith("._") for p in ev.iterdir())
    classes = [int(r["ans"]) for r in truth]
    assert all(0 <= c < 18 for c in classes)
    assert Counter(c // 6 for c in classes) == {0: 15, 1: 3, 2: 3}
    with Image.open(ev / info[0]["ImageID"]) as im:
        assert (im.size, im.mode, im.format) == ((384, 512), "RGB", "JPEG")


def test_label_distribution_and_quirks_at_scale(tmp_path: Path) -> None:
    # The plan alone (no drawing) for a set the size of the real one.
    rng = np.random.default_rng([0, 2])
    rows, jobs, beside = synth._plan_train(rng, tmp_path, 2700, seed=0)
    assert len(rows) == len(jobs) == 2700
    female = np.mean([r.gender == "female" for r in rows])
    assert 0.58 < female < 0.66
    ages = np.array([r.age for r in rows])
    bands = np.bincount((ages >= 30).astype(int) + (ages >= 60), minlength=3) / len(ages)
    assert np.allclose(bands, [0.47, 0.46, 0.07], atol=0.04)
    assert (ages == 18).mean() > 0.03 and ages.min() == 18 and ages.max() == 60
    suffixed = sum("-" in r.id for r in rows)
    assert 20 <= suffixed <= 60
    assert all(re.fullmatch(r"\d{6}(-\d)?", r.id) for r in rows)
    exts = Counter(Path(n).suffix for j in jobs for n in j.names)
    assert 0.02 < exts[".png"] / sum(exts.values()) < 0.04
    assert 0.01 < exts[".jpeg"] / sum(exts.values()) < 0.03
    assert beside


def test_deterministic_and_independent_of_workers(tmp_path: Path) -> None:
    a = tree_hashes(
        synth.write_synthetic(tmp_path / "a", people=8, eval_people=1, seed=7, workers=1).out
    )
    b = tree_hashes(
        synth.write_synthetic(tmp_path / "b", people=8, eval_people=1, seed=7, workers=2).out
    )
    c = tree_hashes(
        synth.write_synthetic(tmp_path / "c", people=8, eval_people=1, seed=8, workers=1).out
    )
    assert len(a) >= 8 * 7 + 1 * 7 + 3
    assert a == b
    assert not set(a.values()) & set(c.values())  # a different seed changes every file


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(FastmaskError, match="people"):
        synth.write_synthetic(tmp_path / "x", people=0)
    with pytest.raises(FastmaskError, match="eval-people"):
        synth.write_synthetic(tmp_path / "x", people=1, eval_people=-1)
    with pytest.raises(FastmaskError, match="seed"):
        synth.write_synthetic(tmp_path / "x", people=1, seed=-1)
    with pytest.raises(FastmaskError, match="workers"):
        synth.write_synthetic(tmp_path / "x", people=1, workers=0)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FastmaskError, match="not a folder"):
        synth.write_synthetic(a_file, people=1)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(FastmaskError, match="--force"):
        synth.write_synthetic(busy, people=1, eval_people=0)
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]


def test_force_replaces_train_and_eval_only(tmp_path: Path) -> None:
    out = tmp_path / "DATA"
    synth.write_synthetic(out, people=3, eval_people=1, seed=0, workers=1)
    (out / "keep.txt").write_text("mine")
    synth.write_synthetic(out, people=2, eval_people=0, seed=1, workers=1, force=True)
    assert (out / "keep.txt").read_text() == "mine"
    assert len([p for p in (out / "train" / "images").iterdir() if p.is_dir()]) == 2
    assert len(read_csv(out / "train" / "train.csv")) == 2
    assert read_csv(out / "eval" / "info.csv") == []
    assert not list((out / "eval" / "images").iterdir())
    assert not list(out.rglob("*.tmp"))


def test_cli_command(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="fastmask")
    synth.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(
        ["synth", "--out", str(out), "--people", "2", "--eval-people", "1", "--seed", "3"]
        + ["--workers", "1"]
    )
    assert args.func(args) == 0
    assert len(read_csv(out / "train" / "train.csv")) == 2
    assert len(read_csv(out / "eval" / "truth.csv")) == 7
    with pytest.raises(FastmaskError):
        args.func(args)  # now non-empty, and no --force
