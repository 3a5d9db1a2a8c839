"""The local leaderboard: ordered by OOF macro F1, naming the settings that differ."""

from __future__ import annotations

import json
from pathlib import Path

from fastmask import cli


def job(root: Path, name: str, f1: float | None, settings: dict) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "recipe.json").write_text(json.dumps({"name": "demo", "effective": settings}))
    if f1 is not None:
        summary = {
            "finished": True,
            "oof_macro_f1": f1,
            "oof_per_task_f1": {"mask": 0.9, "gender": 0.8, "age": 0.7},
            "eval_macro_f1": None,
            "wall_s": 12.3,
        }
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_leaderboard_orders_runs_and_names_differing_keys(tmp_path: Path, capsys):
    same = {"folds": 3, "multi.model": "resnet18"}
    a = job(tmp_path, "a", 0.61, {**same, "multi.lr": 0.001})
    b = job(tmp_path, "b", 0.74, {**same, "multi.lr": 0.002})
    c = job(tmp_path, "c", None, {**same, "multi.lr": 0.003})
    md, csv = tmp_path / "lb.md", tmp_path / "lb.csv"
    argv = ["leaderboard", str(a), str(c), str(b), "--md", str(md), "--csv", str(csv)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    # A key every task block of a job agrees on is named as the recipe's [train] key.
    assert "train.lr" in out[0] and "folds" not in out[0] and "train.model" not in out[0]
    rows = out[2:5]
    assert rows[0].split()[1] == str(b) and "0.7400" in rows[0] and "0.002" in rows[0]
    assert rows[1].split()[1] == str(a)
    assert rows[2].split()[1] == str(c) and "unfinished" in rows[2]
    assert md.read_text().startswith("| # | run | recipe | oof_f1")
    assert csv.read_text().splitlines()[0].endswith("train.lr")


def test_a_multi_job_and_a_three_task_job_differ_only_where_they_do(tmp_path: Path, capsys):
    # Each job's effective settings name every key per task: compared raw, a multi job and a
    # three-task job "differed" in all ~150 of them, which buried the few that mattered.
    shared = {"epochs": 10, "lr": 0.001, "batch_size": 32}
    multi = {"tasks": ["multi"], **{f"multi.{k}": v for k, v in shared.items()}}
    multi["multi.model"] = "resnet18"
    three = {"tasks": ["mask", "gender", "age"]}
    for task, model in (("mask", "resnet18"), ("gender", "resnet18"), ("age", "resnet50")):
        three.update({f"{task}.{k}": v for k, v in shared.items()})
        three[f"{task}.model"] = model
    a = job(tmp_path, "a", 0.7, multi)
    b = job(tmp_path, "b", 0.6, three)
    assert cli.main(["leaderboard", str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    columns = out[0].split()[9:]
    assert columns == ["age.model", "gender.model", "mask.model", "tasks", "train.model"]
    assert out[2].split()[-1] == "resnet18" and out[3].split()[-2:] == ["[mask,gender,age]", "-"]


def test_leaderboard_refuses_a_folder_that_is_not_a_job(tmp_path: Path, capsys):
    assert cli.main(["leaderboard", str(tmp_path)]) == 2
    assert "no recipe.json" in capsys.readouterr().err
