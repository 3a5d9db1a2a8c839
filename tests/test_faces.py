"""Face boxes: real photos from installed packages, the cached CLI, and the loader contract."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fastmask import cli, faces, synth


def _astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return np.asarray(skimage_data.astronaut())


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def _china() -> np.ndarray:
    datasets = pytest.importorskip("sklearn.datasets")
    return np.asarray(datasets.load_sample_image("china.jpg"))


@pytest.fixture(scope="module")
def detector() -> faces.Detector:
    return faces.Detector(faces.DETECTORS[faces.DEFAULT_DETECTOR])


# Face centres read off the photos by hand: (x, y) in pixels.
@pytest.mark.parametrize(
    ("load", "centre"), [(_astronaut, (350, 185)), (_grace_hopper, (265, 215))]
)
def test_real_photo_box_holds_face_centre(detector, load, centre) -> None:
    image = load()
    found = detector.detect(image)
    assert found is not None
    (x0, y0, x1, y1), score = found
    assert x0 <= centre[0] <= x1 and y0 <= centre[1] <= y1
    width = image.shape[1]
    assert 0.1 * width <= x1 - x0 <= 0.6 * width
    assert 0.5 <= (y1 - y0) / (x1 - x0) <= 2.0
    assert score > 0


def test_photo_without_face_gives_none(detector) -> None:
    assert detector.detect(_china()) is None


def test_expand_box_grows_each_side_and_clamps() -> None:
    assert faces.expand_box((10, 20, 30, 60)) == pytest.approx((4, 8, 36, 72))
    assert faces.expand_box((10, 20, 30, 60), 0.5) == pytest.approx((0, 0, 40, 80))
    assert faces.expand_box((10, 20, 30, 60), 1.0, width=35, height=70) == pytest.approx(
        (0, 0, 35, 70)
    )
    assert faces.expand_box((10, 20, 30, 60), 0.0) == pytest.approx((10, 20, 30, 60))


def test_load_face_boxes_reads_empty_fields_as_none(tmp_path: Path) -> None:
    csv = tmp_path / "faces.csv"
    csv.write_text("path,x0,y0,x1,y1,score\n/d/a.jpg,1,2,30.5,40,7\n/d/b.png,,,,,\n")
    assert faces.load_face_boxes(csv) == {"/d/a.jpg": (1.0, 2.0, 30.5, 40.0), "/d/b.png": None}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faces") / "data"
    synth.write_synthetic(out, people=3, eval_people=1, seed=0, workers=1)
    return out


def test_cli_writes_cache_reuses_it_and_rebuilds_on_change(tiny_data: Path, caplog) -> None:
    from fastmask import data as D

    caplog.set_level(logging.INFO, logger="fastmask.faces")
    assert cli.main(["faces", str(tiny_data), "--workers", "2"]) == 0
    csv = tiny_data / "faces.csv"
    frame = pd.read_csv(csv)
    assert list(frame.columns) == faces.CSV_COLUMNS
    train = D.build_index(tiny_data).frame["path"].tolist()
    evals = D.read_eval(tiny_data)["path"].tolist()
    assert sorted(frame["path"]) == sorted(train + evals)
    assert (tiny_data / "faces_grid.png").stat().st_size > 0
    boxes = faces.load_face_boxes(csv)
    assert set(boxes) == set(train + evals)
    assert any(b is not None for b in boxes.values())

    caplog.clear()
    written = csv.stat().st_mtime_ns
    assert cli.main(["faces", str(tiny_data)]) == 0
    assert "up to date" in caplog.text
    assert csv.stat().st_mtime_ns == written

    # A changed image (new mtime) invalidates the cache.
    changed = Path(train[0])
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    caplog.clear()
    assert cli.main(["faces", str(tiny_data)]) == 0
    assert "up to date" not in caplog.text
    assert "got a face" in caplog.text

    caplog.clear()
    assert cli.main(["faces", str(tiny_data), "--force"]) == 0
    assert "got a face" in caplog.text


def test_cli_out_and_other_detector(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "boxes" / "haar.csv"
    assert cli.main(["faces", str(tiny_data), "--detector", "haar", "--out", str(out)]) == 0
    assert out.exists() and (out.parent / "haar.csv.json").exists()
    assert (out.parent / "faces_grid.png").exists()
