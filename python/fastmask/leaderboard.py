"""`python -m fastmask leaderboard DIR [DIR ...]`: the local leaderboard of `fastmask run` jobs.

One row per job folder, best out-of-fold (OOF) macro F1 first, with the per-task OOF F1, the
eval F1 when the data had a truth.csv, the wall time, and the recipe settings that differ
between the jobs (from each job's recipe.json, defaults included), so a comparison of
settings never costs a leaderboard submission. Prints a table; `--md` and `--csv` write it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastmask.errors import FastmaskError
from fastmask.files import write_csv_atomic, write_text_atomic
from fastmask.run import read_json
from fastmask.schema import TRAIN_TASKS

FIGURES = ("oof_macro_f1", "mask", "gender", "age", "eval_macro_f1", "wall_s")


def shared_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A job's settings with each per-task key its task blocks agree on folded into
    `train.<key>`: a multi job and a three-task job then differ only where they really do,
    not in every one of their ~50 keys a task."""
    blocks: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {}
    for key, value in settings.items():
        section, _, name = key.partition(".")
        if name and section in TRAIN_TASKS:
            blocks.setdefault(name, {})[section] = value
        else:
            out[key] = value
    tasks = {t for per_task in blocks.values() for t in per_task}
    for name, per_task in blocks.items():
        values = {json.dumps(v, sort_keys=True) for v in per_task.values()}
        if set(per_task) == tasks and len(values) == 1:
            out[f"train.{name}"] = next(iter(per_task.values()))
        else:
            out.update({f"{t}.{name}": v for t, v in per_task.items()})
    return out


def load_rows(folders: Sequence[str | Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (figures and settings) of each job folder, best first, and the differing keys."""
    rows = []
    for folder in map(Path, folders):
        recipe = read_json(folder / "recipe.json")
        if recipe is None:
            raise FastmaskError(f"{folder}: no recipe.json; not a `fastmask run` folder")
        summary = read_json(folder / "summary.json") or {}
        per_task = summary.get("oof_per_task_f1") or {}
        rows.append(
            {
                "run": str(folder),
                "recipe": recipe.get("name", ""),
                "status": "done" if summary.get("finished") else "unfinished",
                "oof_macro_f1": summary.get("oof_macro_f1"),
                "mask": per_task.get("mask"),
                "gender": per_task.get("gender"),
                "age": per_task.get("age"),
                "eval_macro_f1": summary.get("eval_macro_f1"),
                "wall_s": summary.get("wall_s"),
                "settings": shared_settings(recipe.get("effective", {})),
            }
        )
    keys = sorted({k for r in rows for k in r["settings"]})
    differ = [k for k in keys if len({json.dumps(r["settings"].get(k)) for r in rows}) > 1]
    rows.sort(key=lambda r: (r["oof_macro_f1"] is None, -(r["oof_macro_f1"] or 0.0)))
    return rows, differ


def table(rows: list[dict[str, Any]], differ: list[str]) -> list[list[str]]:
    """Header and one line per row, as strings."""

    def fmt(value: Any, key: str) -> str:
        if value is None:
            return "-"
        if key == "wall_s":
            return f"{float(value):.0f}"
        if isinstance(value, float):
            return f"{value:.4f}" if key in FIGURES else f"{value:g}"
        if isinstance(value, list):
            return "[" + ",".join(str(v) for v in value) + "]"
        return str(value)

    header = ["#", "run", "recipe", "oof_f1", "mask", "gender", "age", "eval_f1", "wall_s"]
    lines = [header + differ]
    for i, r in enumerate(rows, 1):
        line = [str(i), r["run"], r["recipe"]]
        line += [fmt(r[k], k) for k in FIGURES]
        line += [fmt(r["settings"].get(k), k) for k in differ]
        if r["status"] != "done":
            line[3] = "unfinished"
        lines.append(line)
    return lines


def as_text(lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


def as_markdown(lines: list[list[str]]) -> str:
    rows = ["| " + " | ".join(line) + " |" for line in lines]
    rows.insert(1, "| " + " | ".join("---" for _ in lines[0]) + " |")
    return "\n".join(rows) + "\n"


def run_command(args: argparse.Namespace) -> int:
    rows, differ = load_rows(args.runs)
    lines = table(rows, differ)
    print(as_text(lines), end="")
    if not differ and len(rows) > 1:
        print("(the runs' recipes have the same settings)")
    if args.md:
        write_text_atomic(args.md, as_markdown(lines))
        print(f"wrote {args.md}")
    if args.csv:
        import pandas as pd

        write_csv_atomic(pd.DataFrame(lines[1:], columns=lines[0]), args.csv)
        print(f"wrote {args.csv}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="compare `fastmask run` jobs: OOF macro F1, per task, wall time, differing keys",
        description="One row per job folder, sorted by out-of-fold macro F1, with the recipe "
        "settings that differ between the jobs.",
    )
    p.add_argument("runs", nargs="+", metavar="DIR", help="job folders of `fastmask run`")
    p.add_argument("--md", metavar="FILE", help="also write the table as markdown")
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    p.set_defaults(func=run_command)
