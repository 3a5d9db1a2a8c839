from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import QUIRKY_PEOPLE, image_bytes, write_person, write_train_csv
from fastmask import data as D
from fastmask.errors import DataError

P = "000001_female_Asian_45"


def test_labels_encode_decode_round_trip():
    for c in range(18):
        m, g, a = D.decode_class(c)
        assert D.encode_class(m, g, a) == c
    m, g, a = D.decode_classes(np.arange(18))
    assert (D.encode_class(m, g, a) == np.arange(18)).all()
    assert D.encode_class(2, 1, 2) == 17
    with pytest.raises(DataError, match="0..17"):
        D.decode_class(18)
    assert len(D.class_names()) == 18 and D.class_names()[0] == "wear/male/<30"


def test_age_band_boundaries_are_configurable():
    ages = np.array([18, 29, 30, 57, 58, 59, 60])
    assert D.age_band(ages).tolist() == [0, 0, 1, 1, 1, 1, 2]
    assert D.age_band(ages, (30, 58)).tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert D.age_band(29) == 0 and D.age_band(60) == 2
    with pytest.raises(DataError, match="increasing"):
        D.age_band(40, (60, 30))


def test_parse_person_folder():
    p = D.parse_person_folder("001498-1_male_Asian_20")
    assert (p.id, p.gender, p.race, p.age) == ("001498-1", 0, "Asian", 20)
    assert D.parse_person_folder("000001_female_Asian_45").gender == 1
    for bad in ["000001_female_Asian", "abc_female_Asian_45", "000001_woman_Asian_45",
                "000001_female_Asian_61", "000001_female_Asian_x"]:  # fmt: skip
        with pytest.raises(DataError, match="000001|abc"):
            D.parse_person_folder(bad)


def test_quirky_index_counts_exactly(quirky_data: Path):
    idx = D.build_index(quirky_data, use_cache=False)
    f = idx.frame
    assert list(f.columns) == D.INDEX_COLUMNS
    assert len(f) == 7 * len(QUIRKY_PEOPLE)
    assert f["person"].nunique() == len(QUIRKY_PEOPLE)  # 003397 stays two people
    assert (f.groupby("person").size() == 7).all()
    assert not f["path"].str.contains("/._").any()
    assert f["ext"].value_counts().to_dict() == {".jpg": 8 * 7 - 2, ".png": 7, ".jpeg": 7 + 2}
    assert all(sorted(m) == [0] * 5 + [1, 2] for m in f.groupby("person")["mask"].apply(list))
    assert f["cls"].tolist() == D.encode_class(f["mask"], f["gender"], f["age_band"]).tolist()
    # corrections applied by default: gender flip, mask swap, age fix
    assert set(f[f["id"] == "001498-1"]["gender"]) == {1}
    swapped = f[f["id"] == "000020"].set_index("stem")["mask"]
    assert swapped["incorrect_mask"] == 2 and swapped["normal"] == 1
    assert set(f[f["id"] == "004348"]["age_band"]) == {2}
    assert idx.corrections_applied == 3
    assert idx.skipped == []
    assert len(idx.people) == len(QUIRKY_PEOPLE)


def test_corrections_can_be_excluded_or_disabled_or_custom(quirky_data: Path, tmp_path: Path):
    excl = D.build_index(quirky_data, exclude_corrected=True, use_cache=False)
    assert excl.frame["person"].nunique() == len(QUIRKY_PEOPLE) - 3
    raw = D.build_index(quirky_data, corrections=None, use_cache=False)
    assert set(raw.frame[raw.frame["id"] == "001498-1"]["gender"]) == {0}
    assert raw.corrections_applied == 0
    custom = tmp_path / "mine.csv"
    custom.write_text("id,field,value\n000010,age,61\n000001,gender,flip\n")
    mine = D.build_index(quirky_data, corrections=custom, use_cache=False)
    assert set(mine.frame[mine.frame["id"] == "000010"]["age_band"]) == {2}
    assert set(mine.frame[mine.frame["id"] == "000001"]["gender"]) == {0}
    bad = tmp_path / "bad.csv"
    bad.write_text("id,field,value\n000010,height,2\n")
    with pytest.raises(DataError, match="bad.csv row 2.*height"):
        D.build_index(quirky_data, corrections=bad, use_cache=False)


def test_shipped_corrections_cover_dataset_md():
    default = D.load_corrections("default")
    assert len(default) == 19
    assert len(D.load_corrections("default", disputed=True)) == 19 + 14
    assert set(default[default["field"] == "mask"]["id"]) == {"000020", "004418", "005227"}


def test_age_bounds_for_training(quirky_data: Path):
    idx = D.build_index(quirky_data, age_bounds=(30, 58), use_cache=False)
    assert set(idx.frame[idx.frame["id"] == "000010"]["age_band"]) == {2}
    assert idx.age_bounds == (30, 58)


def test_cache_is_used_and_rebuilt_when_folder_changes(quirky_data: Path):
    first = D.build_index(quirky_data)
    assert (quirky_data / "train" / ".fastmask-index.csv").exists()
    again = D.build_index(quirky_data)
    pd.testing.assert_frame_equal(first.frame, again.frame)
    images = quirky_data / "train" / "images"
    write_person(images, "000099_male_Asian_33")
    write_train_csv(quirky_data / "train", [*QUIRKY_PEOPLE, "000099_male_Asian_33"])
    grown = D.build_index(quirky_data)
    assert len(grown.frame) == len(first.frame) + 7


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda im: (im / "0001_female_Asian_45").mkdir(), "not {id}"),
        (lambda im: (im / "000050_male_Asian_30").mkdir(), "empty person folder"),
        (lambda im: (im / P / "mask3.jpg").unlink(), "missing image mask3"),
        (
            lambda im: (im / P / "mask3.png").write_bytes(image_bytes("PNG")),
            "duplicated image stem mask3",
        ),
        (
            lambda im: (im / P / "normal.jpg").write_text("hello"),
            "not a JPEG or PNG",
        ),
        (lambda im: (im / P / "normal.jpg").write_bytes(b""), "0 bytes"),
        (
            lambda im: (im / P / "notes.txt").write_text("x"),
            "unexpected file",
        ),
    ],
)
def test_bad_input_is_named_or_skipped_when_lenient(quirky_data: Path, damage, reason, caplog):
    images = quirky_data / "train" / "images"
    damage(images)
    with pytest.raises(DataError, match=reason):
        D.build_index(quirky_data, use_cache=False)
    idx = D.build_index(quirky_data, lenient=True, use_cache=False)
    assert any(reason in s["reason"] for s in idx.skipped)
    assert any(reason in r.message for r in caplog.records if r.levelname == "WARNING")
    assert len(idx.frame) <= 7 * len(QUIRKY_PEOPLE)


def test_train_csv_mismatch_and_wrong_columns(quirky_data: Path):
    train = quirky_data / "train"
    write_train_csv(train, [*QUIRKY_PEOPLE, "000077_male_Asian_40"])
    with pytest.raises(DataError, match="000077_male_Asian_40"):
        D.build_index(quirky_data, use_cache=False)
    (train / "train.csv").write_text("id,sex,race,age,path\n")
    with pytest.raises(DataError, match="expected id,gender,race,age,path"):
        D.build_index(quirky_data, use_cache=False)


def test_not_a_data_set(tmp_path: Path):
    with pytest.raises(DataError, match="does not look like a data set"):
        D.build_index(tmp_path)


def test_read_eval_keeps_order_and_resolves_extensions(quirky_data: Path):
    ev = D.read_eval(quirky_data)
    info = pd.read_csv(quirky_data / "eval" / "info.csv")
    assert ev["ImageID"].tolist() == info["ImageID"].tolist()
    assert all(Path(p).exists() for p in ev["path"])
    # a file saved with another extension still resolves by stem
    first = quirky_data / "eval" / "images" / info["ImageID"][0]
    first.rename(first.with_suffix(".JPEG"))
    assert D.read_eval(quirky_data / "eval")["path"][0].endswith(".JPEG")


def test_read_eval_errors(quirky_data: Path):
    info = quirky_data / "eval" / "info.csv"
    lines = info.read_text().splitlines()
    info.write_text("\n".join([*lines, f"{'f' * 40}.jpg,0"]) + "\n")
    with pytest.raises(DataError, match="ffff.*has no image file"):
        D.read_eval(quirky_data)
    assert len(D.read_eval(quirky_data, lenient=True)) == 5
    info.write_text("ImageID,answer\n")
    with pytest.raises(DataError, match="expected ImageID,ans"):
        D.read_eval(quirky_data)
    shutil.rmtree(quirky_data / "eval")
    with pytest.raises(DataError, match="info.csv not found"):
        D.read_eval(quirky_data)


def test_a_missing_eval_file_is_reported_once_and_never_decoded_as_nan(quirky_data: Path):
    """pandas >= 3 stores None in a str column as NaN: the row without a file must stay None,
    or check decodes a file called 'nan' and predict --on-error fallback lists its reason."""
    from fastmask.check import check_data

    info = quirky_data / "eval" / "info.csv"
    info.write_text(info.read_text() + f"{'f' * 40}.jpg,0\n")
    table = D.eval_table(quirky_data, D.Problems(lenient=True, warn=False))
    assert table["path"].iloc[-1] is None
    report = check_data(quirky_data, threads=1, expected_size=None)
    # (the fixture's images are all the same bytes: duplicates across people, not checked here)
    problems = [p for p in report.to_json()["problems"] if p["kind"] != "duplicate"]
    assert [p["kind"] for p in problems] == ["eval-missing"]
    assert problems[0]["path"].endswith(f"{'f' * 40}.jpg")
    assert report.images == 10 * 7 + 5


def _synthetic_people(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ages = rng.choice([20, 25, 35, 45, 60], size=n, p=[0.3, 0.2, 0.2, 0.2, 0.1])
    genders = rng.integers(0, 2, size=n)
    rows = []
    for i in range(n):
        for m in (0, 0, 0, 0, 0, 1, 2):
            rows.append({"person": f"{i:06d}", "gender": genders[i], "age": ages[i], "mask": m})
    return D.with_labels(pd.DataFrame(rows))


def test_split_by_person_no_leak_and_stratified():
    frame = _synthetic_people(400)
    tr, va = D.split_people(frame, 0.2, seed=1)
    assert set(tr["person"]).isdisjoint(va["person"])
    assert len(tr) + len(va) == len(frame)
    assert abs(va["person"].nunique() - 80) <= 6
    for (g, a), grp in frame.drop_duplicates("person").groupby(["gender", "age_band"]):
        in_val = va.drop_duplicates("person")
        share = ((in_val["gender"] == g) & (in_val["age_band"] == a)).sum() / len(grp)
        assert abs(share - 0.2) < 0.05
    tr2, va2 = D.split_people(frame, 0.2, seed=1)
    assert va2["person"].tolist() == va["person"].tolist()
    assert D.split_people(frame, 0.2, seed=2)[1]["person"].tolist() != va["person"].tolist()


def test_kfold_covers_everyone_once():
    frame = _synthetic_people(203)
    folds = D.kfold_people(frame, 5, seed=0)
    vals = [set(v["person"]) for _, v in folds]
    assert set().union(*vals) == set(frame["person"])
    assert sum(len(v) for v in vals) == frame["person"].nunique()
    assert max(map(len, vals)) - min(map(len, vals)) <= 1
    for tr, va in folds:
        assert set(tr["person"]).isdisjoint(va["person"])
    with pytest.raises(DataError, match="folds must be >= 2"):
        D.kfold_people(frame, 1)


def test_corrections_swap_or_set_any_file_and_skip_commented_lines(
    quirky_data: Path, tmp_path: Path
):
    custom = tmp_path / "mine.csv"
    custom.write_text(
        "id,field,value,status,note\n"
        "# 000001,gender,flip,default,commented out: not applied\n"
        "000001,mask,swap:mask1:normal,default,\n"
        "000002,mask,set:mask3:incorrect,default,\n"
    )
    frame = D.build_index(quirky_data, corrections=custom, use_cache=False).frame
    one = frame[frame["id"] == "000001"].set_index("stem")
    assert (one.loc["mask1", "mask"], one.loc["normal", "mask"], one.loc["mask2", "mask"]) == (
        2,
        0,
        0,
    )
    assert set(one["gender"]) == {1}  # the commented flip did not apply
    two = frame[frame["id"] == "000002"].set_index("stem")
    assert two.loc["mask3", "mask"] == 1 and two.loc["mask3", "cls"] == 1 * 6 + 0 * 3 + 0
    bad = tmp_path / "bad.csv"
    bad.write_text("id,field,value\n# a comment\n000001,mask,swap:mask1:mask9\n")
    with pytest.raises(DataError, match=r"bad.csv row 3: mask value 'swap:mask1:mask9'"):
        D.build_index(quirky_data, corrections=bad, use_cache=False)


def test_a_correction_with_an_impossible_age_or_a_shifted_row_names_its_line(tmp_path: Path):
    bad_age = tmp_path / "age.csv"
    bad_age.write_text("id,field,value,status,note\n000001,age,200,default,typo\n")
    with pytest.raises(
        DataError, match=r"row 2: age value '200', expected an integer age 1\.\.120"
    ):
        D.load_corrections(bad_age)
    shifted = tmp_path / "shifted.csv"
    shifted.write_text("id,field,value,status,note\n# ok\n000001,gender,male,default,a, b\n")
    with pytest.raises(DataError, match=r"row 3: 6 fields, the header has 5"):
        D.load_corrections(shifted)
