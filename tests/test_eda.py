from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import image_bytes, write_person, write_train_csv
from fastmask import data as D
from fastmask import eda
from fastmask.cli import main
from fastmask.errors import DataError

REQUIRED_KEYS = {
    "people": int,
    "images": int,
    "classes": list,
    "mask": list,
    "gender": list,
    "age": list,
    "extensions": dict,
    "skipped": list,
    "corrections_applied": int,
    "people_gender": list,
    "people_age": list,
    "age_bounds": list,
    "ages": dict,
}
LENGTHS = {"classes": 18, "mask": 3, "gender": 2, "age": 3, "people_gender": 2, "people_age": 3}
OUTPUT_FILES = {"summary.json", *eda.PLOT_FILES}


def _assert_plain_ints(value: object) -> None:
    """numpy ints sneak in easily and break json / equality with the file; none allowed."""
    if isinstance(value, dict):
        for v in value.values():
            _assert_plain_ints(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain_ints(v)
    else:
        assert type(value) in (int, str, type(None)), (value, type(value))


def _assert_pngs(out: Path) -> None:
    for name in eda.PLOT_FILES:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert path.stat().st_size > 5_000, name
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.width >= 300 and im.height >= 300, (name, im.size)


def test_summary_and_plots_on_quirky_data(quirky_data: Path, tmp_path: Path):
    out = tmp_path / "eda" / "nested"  # parents are created too
    summary = eda.analyse(quirky_data, out)

    # Exactly the files promised: no temp leftovers beside them.
    assert set(p.name for p in out.iterdir()) == OUTPUT_FILES
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    for key, kind in REQUIRED_KEYS.items():
        assert isinstance(summary[key], kind), key
    for key, n in LENGTHS.items():
        assert len(summary[key]) == n, key
    _assert_plain_ints(summary)

    assert summary["people"] == 10
    assert summary["images"] == 70
    assert summary["extensions"] == {".jpg": 54, ".jpeg": 9, ".png": 7}
    assert sum(summary["classes"]) == summary["images"]
    assert summary["mask"] == [50, 10, 10]
    # 001498-1 is corrected to female; 004348 (written 59) to 60.
    assert summary["gender"] == [28, 42] and summary["people_gender"] == [4, 6]
    assert summary["age"] == [35, 21, 14] and summary["people_age"] == [5, 3, 2]
    assert summary["people_gender_age"] == [[2, 1, 1], [3, 2, 1]]
    assert summary["ages"] == {
        "18": 1,
        "19": 1,
        "20": 2,
        "29": 1,
        "35": 1,
        "45": 1,
        "58": 1,
        "60": 2,
    }
    assert summary["corrections_applied"] == 3
    assert summary["skipped"] == []
    assert summary["age_bounds"] == [30, 60]
    assert summary["eval_images"] == 5

    # Every count agrees with the index the trainer would build.
    idx = D.build_index(quirky_data, use_cache=False)
    f = idx.frame
    assert summary["classes"] == np.bincount(f["cls"], minlength=18).tolist()
    assert summary["mask"] == np.bincount(f["mask"], minlength=3).tolist()
    assert summary["gender"] == np.bincount(f["gender"], minlength=2).tolist()
    assert summary["age"] == np.bincount(f["age_band"], minlength=3).tolist()
    assert summary["extensions"] == f["ext"].value_counts().to_dict()
    assert summary["people_age"] == np.bincount(idx.people["age_band"], minlength=3).tolist()
    _assert_pngs(out)


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plots are checked elsewhere; skipping them keeps a test about the numbers, and fast."""
    for name in ("plot_counts", "plot_classes", "plot_age_hist", "plot_gender_age"):
        monkeypatch.setattr(eda, name, lambda summary, path: path)
    monkeypatch.setattr(eda, "plot_samples", lambda index, path, n, seed: (path, []))


def test_options_reach_the_index(quirky_data: Path, tmp_path: Path, no_plots: None):
    shutil.rmtree(quirky_data / "eval")
    summary = eda.analyse(
        quirky_data, tmp_path / "out", age_bounds=(30, 58), corrections="none", samples_per_class=1
    )
    assert summary["eval_images"] is None
    assert summary["corrections_applied"] == 0
    assert summary["age_bounds"] == [30, 58]
    # Uncorrected: 004348 stays 59 and joins 000010 (58) in the old band; 001498-1 stays male.
    assert summary["ages"]["59"] == 1 and summary["ages"]["60"] == 1
    assert summary["people_age"] == [5, 2, 3]
    assert summary["people_gender"] == [5, 5]

    excluded = eda.analyse(quirky_data, tmp_path / "excl", exclude_corrected=True)
    assert excluded["people"] == 7 and excluded["images"] == 49
    assert excluded["corrections_applied"] == 3


def _damage(data: Path) -> None:
    images = data / "train" / "images"
    broken = write_person(images, "000099_male_Asian_40")
    (broken / "normal.jpg").write_bytes(b"this is not an image")
    (images / "not_a_person").mkdir()
    (images / "not_a_person" / "mask1.jpg").write_bytes(image_bytes())
    folders = sorted(p.name for p in images.iterdir() if p.name[0] != "." and "_Asian_" in p.name)
    write_train_csv(data / "train", folders)


def test_lenient_lists_skipped_items(quirky_data: Path, tmp_path: Path, no_plots: None):
    _damage(quirky_data)
    with pytest.raises(DataError, match="000099_male_Asian_40"):
        eda.analyse(quirky_data, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()  # nothing written for a failed index

    summary = eda.analyse(quirky_data, tmp_path / "out", lenient=True, samples_per_class=2)
    skipped = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert "not_a_person" in skipped and "normal.jpg" in skipped
    assert "magic bytes" in skipped["normal.jpg"]
    assert summary["people"] == 11 and summary["images"] == 76
    assert (
        json.loads((tmp_path / "out" / "summary.json").read_text())["skipped"]
        == (summary["skipped"])
    )


def test_samples_pick_distinct_people_first(quirky_data: Path):
    idx = D.build_index(quirky_data, use_cache=False)
    picked = eda.pick_samples(idx.frame, 3, seed=0)
    assert eda.pick_samples(idx.frame, 3, seed=0)[0]["path"].tolist() == picked[0]["path"].tolist()
    for c, rows in picked.items():
        in_class = idx.frame[idx.frame["cls"] == c]
        assert len(rows) == min(3, len(in_class))
        assert (rows["cls"] == c).all()
        assert rows["person"].nunique() == min(len(rows), in_class["person"].nunique())


def test_thumbnail_of_unreadable_file_is_none(tmp_path: Path):
    good = tmp_path / "good.jpg"
    good.write_bytes(image_bytes(size=(384, 512)))
    thumb = eda.load_thumbnail(good)
    assert thumb is not None and thumb.shape == (128, 96, 3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff truncated")
    assert eda.load_thumbnail(bad) is None


def test_band_names_follow_bounds():
    assert eda.band_names((30, 60)) == list(D.AGE_NAMES)
    assert eda.class_labels((30, 60)) == D.class_names()
    assert eda.band_names((30, 58)) == ["<30", "30-57", ">=58"]
    assert eda.band_names((30, 31)) == ["<30", "30", ">=31"]


def test_cli_writes_outputs(quirky_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    out = tmp_path / "cli-out"
    argv = [
        "eda",
        str(quirky_data),
        "--out",
        str(out),
        "--samples",
        "2",
        "--age-bounds",
        "30",
        "58",
    ]
    assert main(argv) == 0
    assert set(p.name for p in out.iterdir()) == OUTPUT_FILES
    assert json.loads((out / "summary.json").read_text())["age_bounds"] == [30, 58]
    assert str(out / "samples.png") in caplog.text  # says where the files went


def test_cli_reports_a_non_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "notdata").mkdir()
    code = main(["eda", str(tmp_path / "notdata"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_out_that_is_a_file_is_a_clean_error(
    quirky_data: Path, tmp_path: Path, no_plots: None, capsys: pytest.CaptureFixture[str]
):
    taken = tmp_path / "out"
    taken.write_text("not a folder\n")
    assert main(["eda", str(quirky_data), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(taken) in err
    assert taken.read_text() == "not a folder\n"


def test_cli_rejects_zero_samples(quirky_data: Path, tmp_path: Path):
    with pytest.raises(SystemExit) as exc:
        main(["eda", str(quirky_data), "--out", str(tmp_path / "o"), "--samples", "0"])
    assert exc.value.code == 2


def test_age_hist_draws_every_person_even_outside_18_to_60(
    quirky_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import matplotlib.axes

    # Corrections may set any age 1..120; the histogram must not drop those people.
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("id,field,value\n000010,age,72\n000002,age,15\n")
    drawn: list[float] = []
    real = matplotlib.axes.Axes.bar
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "bar",
        lambda self, x, height, *a, **kw: (
            drawn.extend(np.atleast_1d(height).tolist()) or real(self, x, height, *a, **kw)
        ),
    )
    summary = eda.summarise(D.build_index(quirky_data, corrections=fixes), None)
    assert summary["ages"]["72"] == 1 and summary["ages"]["15"] == 1
    eda.plot_age_hist(summary, tmp_path / "age_hist.png")
    assert sum(drawn) == summary["people"]
