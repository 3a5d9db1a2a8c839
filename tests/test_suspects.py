"""Label suspects: confident learning on OOF probabilities, per image and per person."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fastmask import data as D
from fastmask.suspects import (
    age_for_band,
    confident_suspects,
    corrections_text,
    find_suspects,
)

STEMS = ["mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal"]


def confident(label: int, k: int, rng: np.random.Generator, strength: float = 0.85) -> list[float]:
    p = rng.dirichlet(np.ones(k)) * (1 - strength)
    p[label] += strength
    return list(p)


def oof_with_errors(seed: int = 0) -> pd.DataFrame:
    """60 people whose OOF probabilities back their labels, except three injected errors:
    person 3's gender, person 5's age band and person 7's mask1 <-> normal files."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(60):
        gender, age = i % 2, [22, 45, 65][i % 3]
        band = int(D.age_band(age))
        person = f"{i:06d}_{D.GENDER_NAMES[gender]}_Asian_{age}"
        seen_gender = 1 - gender if i == 3 else gender
        seen_band = 0 if i == 5 else band  # person 5 is 45 but looks under 30
        for stem in STEMS:
            mask = D.STEM_TO_MASK[stem]
            seen_mask = {"mask1": 2, "normal": 0}.get(stem, mask) if i == 7 else mask
            row = {"path": f"/d/{person}/{stem}.jpg", "person": person, "fold": i % 3,
                   "mask": mask, "gender": gender, "age_band": band}  # fmt: skip
            for head, label, k in (("mask", seen_mask, 3), ("gender", seen_gender, 2),
                                   ("age", seen_band, 3)):  # fmt: skip
                for j, p in enumerate(confident(label, k, rng)):
                    row[f"{head}_p{j}"] = p
            rows.append(row)
    return pd.DataFrame(rows)


def test_confident_learning_flags_only_confident_disagreement():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    given = np.array([0, 0, 1, 0, 1])
    suggested, score = confident_suspects(probs, given)
    # t0 = mean(0.9, 0.8, 0.3) = 0.667, t1 = mean(0.8, 0.4) = 0.6
    assert list(suggested) == [-1, -1, -1, 1, -1]
    assert score[3] == pytest.approx(0.4)


def test_a_given_class_that_is_confident_and_most_probable_is_no_suspect():
    # t0 = mean(0.7, 0.5, 0.65) = 0.617, t1 = 0.8, t2 = 0.3. Row 4 reaches t0 and t2 but its
    # given class 0 is the more probable: cleanlab's confident joint keeps it on the diagonal.
    probs = np.array(
        [[0.7, 0.2, 0.1], [0.5, 0.1, 0.4], [0.1, 0.8, 0.1], [0.4, 0.3, 0.3], [0.65, 0.0, 0.35]]
    )
    suggested, score = confident_suspects(probs, np.array([0, 0, 1, 2, 0]))
    # Row 1 misses t0 while class 2 reaches t2: a suspect, though with a negative margin.
    assert list(suggested) == [-1, 2, -1, -1, -1]
    assert score[1] == pytest.approx(-0.1)


def test_injected_errors_rank_first_with_the_right_corrections():
    table = find_suspects(oof_with_errors())
    top = table.head(3)
    assert set(top["task"]) == {"mask", "gender", "age"}
    swap = top[top["task"] == "mask"].iloc[0]
    assert swap["kind"] == "swap" and swap["correction"] == "swap:mask1:normal"
    assert swap["person"].startswith("000007_")
    gender = top[top["task"] == "gender"].iloc[0]
    assert gender["person"].startswith("000003_") and gender["correction"] == "male"
    age = top[top["task"] == "age"].iloc[0]
    assert age["person"].startswith("000005_") and age["correction"] == "29"
    assert list(table["rank"]) == list(range(1, len(table) + 1))
    assert table["score"].is_monotonic_decreasing


def test_corrections_round_trip_through_the_loader(tmp_path: Path):
    table = find_suspects(oof_with_errors()).head(3)
    text = corrections_text(table)
    lines = [line for line in text.splitlines() if not line.startswith("# ") and line]
    assert lines == ["id,field,value,status,note"], "every suggestion must start commented out"
    path = tmp_path / "corrections.csv"
    path.write_text(text)
    assert D.load_corrections(path).empty
    accepted = "\n".join(line[2:] if line.startswith("# 0") else line for line in text.splitlines())
    path.write_text(accepted + "\n")
    loaded = D.load_corrections(path)
    assert sorted(loaded["field"]) == ["age", "gender", "mask"]
    assert set(loaded["value"]) == {"swap:mask1:normal", "male", "29"}


def test_age_for_band_is_the_nearest_age_in_the_band():
    assert [age_for_band(45, 0), age_for_band(29, 1), age_for_band(58, 2)] == [29, 30, 60]
    assert [age_for_band(62, 1), age_for_band(40, 1), age_for_band(25, 0)] == [59, 40, 25]


def fake_job(folder: Path) -> Path:
    """The files suspects reads from a finished `fastmask run` job with folds."""
    folder.mkdir()
    oof_with_errors().to_csv(folder / "oof.csv", index=False)
    (folder / "summary.json").write_text('{"validation": "out-of-fold", "data": "/none"}')
    (folder / "recipe.json").write_text('{"effective": {}}')
    return folder


def _drop_column(job: Path) -> None:
    pd.read_csv(job / "oof.csv").drop(columns="mask_p2").to_csv(job / "oof.csv", index=False)


def _nan_probability(job: Path) -> None:
    oof = pd.read_csv(job / "oof.csv")
    oof.loc[3, "gender_p0"] = float("nan")
    oof.to_csv(job / "oof.csv", index=False)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda job: (job / "recipe.json").unlink(), "recipe.json"),
        (lambda job: (job / "summary.json").write_text("{"), "summary.json"),
        (lambda job: (job / "oof.csv").write_bytes(b"\xff\xfe\x00"), "oof.csv"),
        (_drop_column, "oof.csv.*mask_p2"),
        (_nan_probability, "oof.csv.*gender_p0"),
    ],
)
def test_a_damaged_job_is_a_clean_error(tmp_path: Path, capsys, damage, message):
    from fastmask import cli

    job = fake_job(tmp_path / "job")
    damage(job)
    assert cli.main(["suspects", str(job), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "s" / "suspects.csv").exists()


def test_a_second_ranking_keeps_the_corrections_a_reviewer_accepted(tmp_path: Path):
    from fastmask.suspects import write_suspects

    job = fake_job(tmp_path / "job")
    write_suspects(job, top=3)
    path = job / "suspects" / "corrections.csv"
    first = path.read_text()
    assert write_suspects(job, top=3) and path.read_text() == first  # no review: same file
    suggestion = next(line for line in first.splitlines() if line.startswith("# 000007,mask,"))
    accepted = suggestion[2:]
    path.write_text(first.replace(suggestion, accepted))
    write_suspects(job, top=5)  # a longer list, after the review
    lines = path.read_text().splitlines()
    assert lines.count(accepted) == 1 and suggestion not in lines
    assert "000005" in path.read_text()  # the new suggestions are there
    loaded = D.load_corrections(path)
    assert ((loaded["id"] == "000007") & (loaded["field"] == "mask")).sum() == 1
    assert len(loaded) == len(D.load_corrections("default")) + 1


def test_the_written_corrections_keep_the_disputed_rows_of_the_file_trained_with(
    tmp_path: Path,
):
    # corrections.csv is meant to replace the file the job trained with: it lost the 14
    # disputed rows of the shipped list (never applied by default, but not to be dropped).
    from fastmask.suspects import write_suspects

    job = fake_job(tmp_path / "job")
    write_suspects(job, top=3)
    path = job / "suspects" / "corrections.csv"
    shipped = D.load_corrections("default", disputed=True)
    written = D.load_corrections(path, disputed=True)
    assert (shipped["status"] == "disputed").sum() > 0
    assert (written["status"] == "disputed").sum() == (shipped["status"] == "disputed").sum()
    assert len(D.load_corrections(path)) == len(D.load_corrections("default"))


def test_a_second_ranking_keeps_a_trained_correction_the_reviewer_turned_off(tmp_path: Path):
    from fastmask.suspects import write_suspects

    job = fake_job(tmp_path / "job")
    write_suspects(job, top=3)
    path = job / "suspects" / "corrections.csv"
    kept = "006359,gender,male,default,written female"
    assert kept in path.read_text().splitlines()
    path.write_text(path.read_text().replace(kept, "# " + kept))  # the reviewer disagrees
    write_suspects(job, top=5)
    lines = path.read_text().splitlines()
    assert kept not in lines and "# " + kept in lines
    loaded = D.load_corrections(path)
    assert "006359" not in set(loaded["id"])
    assert len(loaded) == len(D.load_corrections("default")) - 1


def test_a_job_without_its_fold_summary_still_ranks_with_a_warning(
    tmp_path: Path, quirky_data: Path, caplog
):
    from fastmask import cli

    job = fake_job(tmp_path / "job")  # oof.csv, summary.json, recipe.json: no fold folders
    summary = {"validation": "out-of-fold", "tasks": ["multi"], "data": str(quirky_data)}
    (job / "summary.json").write_text(json.dumps(summary))
    assert cli.main(["suspects", str(job), "--top", "3"]) == 0
    assert (job / "suspects" / "suspects.csv").exists()
    assert re.search(r"multi/fold0/summary\.json", caplog.text), caplog.text


def test_undoing_a_shipped_swap_suggests_corrections_that_really_undo_it():
    # Person 7's labels were already corrected by `000007,mask,swap_incorrect_normal` (as the
    # shipped list does for 000020), but its files were right: the models see incorrect_mask
    # as incorrect and normal as not worn. "swap:incorrect_mask:normal" would set the same
    # labels as the shipped swap again; the suggestions must restore the files' own labels.
    oof = oof_with_errors()
    sel = oof["person"].str.startswith("000007_")
    oof.loc[sel, [f"mask_p{k}" for k in range(3)]] = [0.9, 0.05, 0.05]
    incorrect, normal = (
        sel & oof["path"].str.endswith("incorrect_mask.jpg"),
        sel & oof["path"].str.endswith("normal.jpg"),
    )
    oof.loc[incorrect, "mask"], oof.loc[normal, "mask"] = 2, 1  # the shipped swap applied
    oof.loc[incorrect, ["mask_p0", "mask_p1", "mask_p2"]] = [0.02, 0.95, 0.03]
    oof.loc[normal, ["mask_p0", "mask_p1", "mask_p2"]] = [0.02, 0.03, 0.95]
    table = find_suspects(oof)
    mine = table[table["person"].str.startswith("000007_") & (table["task"] == "mask")]
    frame = pd.DataFrame(
        {"id": "000007", "stem": STEMS, "mask": [D.STEM_TO_MASK[s] for s in STEMS]}
    )
    fixes = pd.DataFrame(
        [{"id": "000007", "field": "mask", "value": "swap_incorrect_normal"}]
        + [{"id": "000007", "field": "mask", "value": v} for v in mine["correction"]]
    )
    fixed, _ = D.apply_corrections(frame, fixes)
    assert list(fixed["mask"]) == [D.STEM_TO_MASK[s] for s in STEMS], mine


def test_an_age_suspect_whose_age_was_corrected_shows_the_band_it_trained_with():
    # A correction moved person 4 (folder age 45) to >=60; its images look 30-59. The sheet
    # read ">=60 (45)", an age that is not in that band.
    oof = oof_with_errors()
    person = oof["person"].str.startswith("000004_")
    oof.loc[person, "age_band"] = 2
    oof.loc[person, ["age_p0", "age_p1", "age_p2"]] = [0.02, 0.95, 0.03]
    row = find_suspects(oof).query("task == 'age' and id == '000004'").iloc[0]
    assert row["given"] == ">=60 (corrected from 45)"
    assert row["suggested"] == "30-59 (45)" and row["correction"] == "45"
