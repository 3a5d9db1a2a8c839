"""Face crop in train and predict, and the mask-appearance augmentation.

Run as a script to redraw docs/mask_augment.png from a synthetic set:
    python -m fastmask synth --out /tmp/mask_aug --people 6 --eval-people 0 --seed 0
    python tests/test_face_crop.py /tmp/mask_aug docs/mask_augment.png
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_TRAIN
from fastmask import cli
from fastmask._native import augment_image
from fastmask.errors import FastmaskError

MASK_AUG_ON = {"mask_aug_p": 1.0, "mask_aug_strength": 0.6}


def render_mask_augment(src: Path, out: Path, size: int = 160, rows: int = 6) -> None:
    """One row per person: the eval crop, then three mask-augmented draws of it."""
    lines = []
    for seed, path in enumerate(sorted(src.rglob("mask1.jpg"))[:rows]):
        image = np.asarray(Image.open(path).convert("RGB"))
        before = augment_image(image, (size, size), train=False)
        after = [
            augment_image(image, (size, size), train=True, seed=seed * 10 + k, knobs=MASK_AUG_ON)
            for k in range(3)
        ]
        lines.append(np.concatenate([before, *after], axis=1))
    Image.fromarray(np.concatenate(lines, axis=0)).save(out, optimize=True)


@pytest.fixture(scope="module")
def face_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic DATA/ with a hand-written faces.csv: a box for every other image."""
    from fastmask.data import build_index, read_eval
    from fastmask.synth import write_synthetic

    data = tmp_path_factory.mktemp("faces") / "data"
    write_synthetic(data, people=10, eval_people=2, seed=5, workers=2)
    paths = build_index(data).frame["path"].tolist() + read_eval(data)["path"].tolist()
    with open(data / "faces.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "x0", "y0", "x1", "y1", "score"])
        for i, p in enumerate(paths):
            w.writerow([p, 100, 120, 284, 330, 0.9] if i % 2 == 0 else [p, "", "", "", "", ""])
    return data


def crop_boxes_seen(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The crop_boxes of every Loader made from now on, in order."""
    import fastmask.loader

    seen: list[Any] = []
    real = fastmask.loader.Loader

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("crop_boxes"))
        return real(*args, **kwargs)

    monkeypatch.setattr(fastmask.loader, "Loader", spy)
    return seen


def test_train_and_predict_use_the_face_boxes(face_data: Path, tmp_path: Path, monkeypatch):
    from fastmask.data import read_eval

    seen = crop_boxes_seen(monkeypatch)
    run = tmp_path / "run"
    argv = ["train", "mask", "--data", str(face_data), "--out", str(run), *TINY_TRAIN]
    assert cli.main([*argv, "--crop", "face", "--face-margin", "0.25"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["crop"], config["face_margin"], config["faces"]) == ("face", 0.25, None)
    # Train and validation loaders got one box or None per image, some of each.
    assert seen and all(b is not None and None in b and len(set(b)) == 2 for b in seen)
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(run), "--data", str(face_data), "--out", str(out)]) == 0
    boxes = seen[-1]
    eval_paths = read_eval(face_data)["path"].tolist()
    assert len(boxes) == len(eval_paths)
    with open(face_data / "faces.csv") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    # 184 x 210 box grown by 0.25 of its size on each side; empty rows give the centre crop.
    for path, box in zip(eval_paths, boxes, strict=True):
        if rows[path]["x0"]:
            assert box == pytest.approx((54.0, 67.5, 330.0, 382.5))
        else:
            assert box is None
    assert any(b is None for b in boxes) and any(b is not None for b in boxes)


def test_face_aligned_train_and_predict_use_turned_boxes(
    face_data: Path, tmp_path: Path, monkeypatch
):
    from fastmask.data import read_eval
    from fastmask.export import face_crop

    # A faces file with landmarks: eyes tilted by 10 degrees, level, missing, or no face.
    with open(face_data / "faces.csv") as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    tilt = math.tan(math.radians(10.0)) * 80
    eyes = {0: [150, 200, 230, 200 + tilt], 1: [150, 200, 230, 200], 2: ["", "", "", ""]}
    faces_file = tmp_path / "faces_landmarks.csv"
    with open(faces_file, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "x0", "y0", "x1", "y1", "score", "le_x", "le_y", "re_x", "re_y",
                    "nose_x", "nose_y", "lm_x", "lm_y", "rm_x", "rm_y"])  # fmt: skip
        for i, p in enumerate(paths):
            if i % 4 == 3:
                w.writerow([p] + [""] * 15)
                continue
            rest = [190, 240, 160, 280, 220, 280] if i % 4 != 2 else [""] * 6
            w.writerow([p, 100, 120, 284, 330, 0.9, *eyes[i % 4 % 3], *rest])
    seen = crop_boxes_seen(monkeypatch)
    run = tmp_path / "run"
    argv = ["train", "mask", "--data", str(face_data), "--out", str(run), *TINY_TRAIN]
    assert cli.main([*argv, "--crop", "face-aligned", "--faces", str(faces_file)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["crop"], config["faces"]) == ("face-aligned", str(faces_file))
    # A hand-written faces file records no detector: classify will use the default one.
    assert face_crop(config) == {"margin": 0.3, "aligned": True, "detector": "mtcnn"}
    face = {"margin": 0.2, "aligned": False, "detector": "mtcnn"}
    assert face_crop({"crop": "face", "face_margin": 0.2}) == face
    assert face_crop({"crop": "center"}) is None
    assert seen and all(b is not None and len(b) > 0 for b in seen)
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(run), "--data", str(face_data), "--out", str(out)]) == 0
    eval_paths = read_eval(face_data)["path"].tolist()
    index = {p: i for i, p in enumerate(paths)}
    boxes = seen[-1]
    assert len(boxes) == len(eval_paths)
    # The box grown by 0.3 per side about its centre (192, 225): 294.4 x 336 pixels.
    grown = pytest.approx((44.8, 57.0, 339.2, 393.0))
    for path, box in zip(eval_paths, boxes, strict=True):
        kind = index[path] % 4
        if kind == 3:
            assert box is None  # no face: the centre crop
            continue
        assert len(box) == 5 and box[:4] == grown
        assert box[4] == pytest.approx(10.0 if kind == 0 else 0.0)
    assert {index[p] % 4 for p in eval_paths} >= {0, 3}


def test_center_crop_is_the_default_and_old_configs_load(tmp_path: Path):
    from fastmask.crops import face_crop_boxes
    from fastmask.train import TrainConfig

    old = TrainConfig.from_json({"task": "mask", "data": str(tmp_path)})
    assert (old.crop, old.face_margin, old.faces) == ("center", 0.3, None)
    assert face_crop_boxes(old, ["a.jpg"]) is None


def test_missing_faces_file_says_how_to_make_it(tmp_path: Path):
    from fastmask.crops import face_crop_boxes
    from fastmask.train import TrainConfig

    c = TrainConfig(task="mask", data=str(tmp_path), crop="face")
    with pytest.raises(FastmaskError, match="faces.csv.*run `python -m fastmask faces "):
        face_crop_boxes(c, ["a.jpg"])


def test_images_missing_from_the_faces_file_are_refused(face_data: Path, tmp_path: Path, capsys):
    # A faces file made before eval/ (or new people) was added: predict fed every eval image
    # the centre crop to a model trained on faces, logging only "0 of 4 images have a face box".
    from fastmask.crops import face_crop_boxes
    from fastmask.data import build_index, read_eval
    from fastmask.train import TrainConfig

    train = build_index(face_data).frame["path"].tolist()
    evals = read_eval(face_data)["path"].tolist()
    with open(face_data / "faces.csv") as f:
        lines = f.read().splitlines()
    partial = tmp_path / "train_only.csv"
    partial.write_text("\n".join(line for line in lines if "/eval/" not in line) + "\n")
    c = TrainConfig(task="mask", data=str(face_data), crop="face", faces=str(partial))
    assert len(face_crop_boxes(c, train) or []) == len(train)
    with pytest.raises(FastmaskError, match=rf"{len(evals)} of {len(evals)} images have no row in"):
        face_crop_boxes(c, evals)
    # Through the CLI: a clean error that names the file and how to remake it.
    run = tmp_path / "run"
    argv = ["train", "mask", "--data", str(face_data), "--out", str(run), *TINY_TRAIN]
    assert cli.main([*argv, "--crop", "face", "--faces", str(partial)]) == 0
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(run), "--data", str(face_data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "train_only.csv" in err and evals[0] in err and "python -m fastmask faces" in err
    assert not out.exists()


def test_mask_augment_is_off_by_default_and_stays_in_the_band(face_data: Path, tmp_path: Path):
    path = sorted(face_data.rglob("mask1.jpg"))[0]
    image = np.asarray(Image.open(path).convert("RGB"))
    plain = augment_image(image, (64, 64), train=True, seed=1, preset="light")
    off = augment_image(image, (64, 64), train=True, seed=1, preset="light", knobs={})
    assert np.array_equal(plain, off)
    base = augment_image(image, (64, 64), train=True, seed=1)
    changed = [
        augment_image(image, (64, 64), train=True, seed=s, knobs=MASK_AUG_ON) != base
        for s in range(1, 6)
    ]
    rows, cols = np.nonzero(np.any(np.stack(changed), axis=(0, 3)))
    assert rows.size > 0
    # The band: rows 40%-92%, columns 15%-85% of the output.
    assert rows.min() >= int(64 * 0.4) and rows.max() < 59
    assert cols.min() >= int(64 * 0.15) and cols.max() < 55
    render_mask_augment(face_data, tmp_path / "grid.png", size=48, rows=2)
    assert Image.open(tmp_path / "grid.png").size == (4 * 48, 2 * 48)


if __name__ == "__main__":
    render_mask_augment(Path(sys.argv[1]), Path(sys.argv[2]))


def test_a_face_crop_run_keeps_the_detector_it_trained_on(face_data: Path, tmp_path: Path):
    # export and classify looked the detector up in faces.csv.json when they ran: made again
    # with another detector after training, the model was served faces it never saw.
    import shutil

    import torch

    from fastmask.classify import read_metadata
    from fastmask.export import export_model
    from fastmask.predict import load_model

    faces = tmp_path / "faces.csv"
    shutil.copy(face_data / "faces.csv", faces)
    record = tmp_path / "faces.csv.json"
    record.write_text(json.dumps({"detector": {"name": "haar-eyes"}}))
    run = tmp_path / "run"
    argv = ["train", "mask", "--data", str(face_data), "--out", str(run), *TINY_TRAIN]
    assert cli.main([*argv, "--crop", "face", "--faces", str(faces)]) == 0
    record.write_text(json.dumps({"detector": {"name": "mtcnn"}}))  # `faces` run again
    assert load_model(run / "best.pt", torch.device("cpu")).face_detector == "haar-eyes"
    exported = export_model(run, "torchscript", tmp_path / "m.ts")
    assert read_metadata(exported)["face_crop"]["detector"] == "haar-eyes"
