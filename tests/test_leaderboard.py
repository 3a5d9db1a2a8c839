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
    assert "multi.lr" in out[0] and "folds" not in out[0] and "multi.model" not in out[0]
    rows = out[2:5]
    assert rows[0].split()[1] == str(b) and "0.7400" in rows[0] and "0.002" in rows[0]
    assert rows[1].split()[1] == str(a)
    assert rows[2].split()[1] == str(c) and "unfinished" in rows[2]
    assert md.read_text().startswith("| # | run | recipe | oof_f1")
    assert csv.read_text().splitlines()[0].endswith("multi.lr")


def test_leaderboard_refuses_a_folder_that_is_not_a_job(tmp_path: Path, capsys):
    assert cli.main(["leaderboard", str(tmp_path)]) == 2
    assert "no recipe.json" in capsys.readouterr().err
