"""predict -> combine -> evaluate on a tiny synthetic set, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fastmask import cli
from fastmask.errors import FastmaskError
from fastmask.predict import find_checkpoints, predict


@pytest.fixture(scope="module")
def runs(tiny_runs: dict[str, Path]) -> dict[str, Path]:
    return tiny_runs


def test_predict_columns_order_and_probabilities(runs, tmp_path: Path):
    out = tmp_path / "mask.csv"
    frame = predict([runs["mask"]], runs["data"], out, threads=2)
    info = pd.read_csv(runs["data"] / "eval" / "info.csv")
    saved = pd.read_csv(out)
    assert saved["ImageID"].tolist() == info["ImageID"].tolist()
    assert list(saved.columns) == ["ImageID", "p0", "p1", "p2"]
    np.testing.assert_allclose(saved[["p0", "p1", "p2"]].sum(axis=1), 1.0, atol=1e-4)
    assert len(frame) == len(info) == 28


def test_tta_and_soft_vote_average(runs, tmp_path: Path):
    one = predict([runs["gender"]], runs["data"], tmp_path / "a.csv", threads=2)
    tta = predict([runs["gender"]], runs["data"], tmp_path / "b.csv", tta=True, threads=2)
    both = predict([runs["gender"], runs["gender"] / "last.pt"], runs["data"],
                   tmp_path / "c.csv", threads=2)  # fmt: skip
    assert not np.allclose(one[["p0", "p1"]], tta[["p0", "p1"]])
    last = predict([runs["gender"] / "last.pt"], runs["data"], tmp_path / "d.csv", threads=2)
    np.testing.assert_allclose(
        both[["p0", "p1"]], (one[["p0", "p1"]] + last[["p0", "p1"]]) / 2, atol=1e-5
    )


def test_mixing_tasks_is_refused(runs, tmp_path: Path):
    with pytest.raises(FastmaskError, match="average checkpoints of one task"):
        predict([runs["mask"], runs["age"]], runs["data"], tmp_path / "x.csv", threads=2)
    with pytest.raises(FastmaskError, match="not a checkpoint"):
        find_checkpoints([tmp_path])


def test_whole_job_through_the_cli(runs, tmp_path: Path, capsys):
    data = runs["data"]
    preds = {}
    for task in ("mask", "gender", "age", "multi"):
        preds[task] = tmp_path / f"{task}.csv"
        args = ["predict", str(runs[task]), "--data", str(data / "eval"), "--out", str(preds[task])]
        assert cli.main([*args, "--threads", "2"]) == 0
    assert "images/s" in capsys.readouterr().out
    multi = pd.read_csv(preds["multi"])
    heads = (("mask", 3), ("gender", 2), ("age", 3))
    assert list(multi.columns)[1:] == [f"{t}_p{j}" for t, k in heads for j in range(k)]
    info = str(data / "eval" / "info.csv")
    sub = tmp_path / "submission.csv"
    by_task = [f"--{t}={preds[t]}" for t in ("mask", "gender", "age")]
    assert cli.main(["combine", *by_task, "--info", info, "--out", str(sub)]) == 0
    sub_multi = tmp_path / "submission_multi.csv"
    assert cli.main(["combine", "--multi", str(preds["multi"]), "--info", info,
                     "--out", str(sub_multi)]) == 0  # fmt: skip
    voted = tmp_path / "voted.csv"
    assert cli.main(["vote", str(sub), str(sub_multi), str(sub), "--out", str(voted)]) == 0
    assert pd.read_csv(voted)["ans"].tolist() == pd.read_csv(sub)["ans"].tolist()
    truth = str(data / "eval" / "truth.csv")
    assert cli.main(["evaluate", "--pred", str(sub), "--truth", truth,
                     "--out", str(tmp_path / "ev")]) == 0  # fmt: skip
    assert "macro F1" in capsys.readouterr().out
    assert (tmp_path / "ev" / "confusion.png").exists()


@pytest.mark.parametrize("content", [b"hello\n", b"\x80\x02}q\x00.", b""])
def test_a_file_that_is_not_a_checkpoint_is_a_clean_error(tmp_path: Path, capsys, content):
    from fastmask.train.runfiles import load_checkpoint

    bad = tmp_path / "notes.pt"
    bad.write_bytes(content)
    with pytest.raises(FastmaskError, match="notes.pt"):
        load_checkpoint(bad)
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(bad), "--data", str(tmp_path), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not out.exists()


def test_age_predictions_passed_as_mask_are_refused(runs, tmp_path: Path, capsys):
    # mask and age both have 3 classes: their files have the same columns, so only the
    # task that predict records beside the CSV tells them apart.
    files = {t: tmp_path / f"{t}.csv" for t in ("mask", "gender", "age")}
    for task, out in files.items():
        predict([runs[task]], runs["data"], out, threads=2)
        assert json.loads(Path(f"{out}.json").read_text())["task"] == task
    info = str(runs["data"] / "eval" / "info.csv")
    sub = tmp_path / "sub.csv"
    swapped = ["--mask", str(files["age"]), "--gender", str(files["gender"]), "--age",
               str(files["mask"]), "--info", info, "--out", str(sub)]  # fmt: skip
    assert cli.main(["combine", *swapped]) == 2
    err = capsys.readouterr().err
    assert "age.csv" in err and "age model" in err and "--mask" in err
    assert not sub.exists()
