"""Out-of-fold (OOF) predictions: every training image predicted by the one fold that held
its person out, assembled from the folds' `val_predictions.csv`, and scored as the
competition scores (18-class macro F1, validation age bands 30/60).

`oof.csv` has one row per training image: `path, person, fold`, the true `mask, gender,
age_band, cls`, the probabilities `mask_p0..2, gender_p0..1, age_p0..2`, and `pred` (the
18-class answer, each head's argmax combined).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastmask.crops import data_key
from fastmask.errors import FastmaskError
from fastmask.metrics import accuracy, macro_f1, per_class_f1
from fastmask.schema import NUM_CLASSES, TASKS, heads, prediction_columns

if TYPE_CHECKING:
    import pandas as pd

TRUTH_COLUMNS = {"mask": "mask", "gender": "gender", "age": "age_band"}
PROB_COLUMNS = prediction_columns("multi")


def fold_dirs(task_dir: Path, folds: int) -> list[Path]:
    """The run folders of a task's folds (a single split is the task folder itself)."""
    return [task_dir] if folds == 1 else [task_dir / f"fold{i}" for i in range(folds)]


def assemble_oof(
    frame: pd.DataFrame, runs: dict[str, list[Path]], complete: bool = True
) -> pd.DataFrame:
    """One row per image of `frame` with its fold and each head's OOF probabilities.

    `runs` holds each task's fold run folders, in fold order. With `complete` (K >= 2 folds)
    every image must be predicted exactly once; a single split (not complete) gives the
    rows of its validation people only. Refuses an image predicted twice, a path the index
    does not hold, and folds that put an image in different folds for different tasks.
    """
    import pandas as pd

    oof = frame[["path", "person", "mask", "gender", "age_band", "cls"]].copy()
    oof = oof.set_index("path", drop=False)
    fold_of: pd.Series | None = None
    here = {data_key(p): p for p in oof.index}
    for task, folders in runs.items():
        parts = []
        for i, folder in enumerate(folders):
            source = folder / "val_predictions.csv"
            if not source.exists():
                raise FastmaskError(f"{source} is missing: fold {i} of {task} has not finished")
            table = pd.read_csv(source)
            table["fold"] = i
            parts.append(table)
        preds = pd.concat(parts, ignore_index=True)
        # The folds wrote absolute paths: match them by their train/images/... part, so a job
        # continues on a data folder that moved (`run ... --data NEW_PLACE`).
        preds["path"] = [here.get(data_key(p), p) for p in preds["path"]]
        repeated = preds["path"][preds["path"].duplicated()]
        if not repeated.empty:
            raise FastmaskError(
                f"{task}: {repeated.iloc[0]} is predicted by more than one fold; the folds of "
                f"{folders[0].parent} do not partition the people"
            )
        unknown = sorted(set(preds["path"]) - set(oof.index))
        missing = sorted(set(oof.index) - set(preds["path"])) if complete else []
        if unknown or missing:
            example = (unknown or missing)[0]
            raise FastmaskError(
                f"{task}: the folds' predictions do not match the data index "
                f"({len(missing)} images unpredicted, {len(unknown)} unknown, e.g. {example}); "
                "was the data changed after training?"
            )
        if not complete:
            oof = oof.loc[oof.index.isin(set(preds["path"]))]
        preds = preds.set_index("path").loc[oof.index]
        if fold_of is None:
            fold_of = preds["fold"]
        elif not fold_of.index.equals(preds.index) or not np.array_equal(
            fold_of.to_numpy(), preds["fold"].to_numpy()
        ):
            raise FastmaskError(
                f"{task}: its folds hold other people than the first task's; every task of a "
                "job must share the folds (same data, seed and fold count)"
            )
        src = prediction_columns(task)
        for head in heads(task):
            for column, target in zip(src[head], PROB_COLUMNS[head], strict=True):
                oof[target] = preds[column].to_numpy()
    assert fold_of is not None
    oof.insert(2, "fold", fold_of.to_numpy().astype(int))
    oof["pred"] = oof_answers(oof)
    return oof.reset_index(drop=True)


def head_probabilities(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """{head: [N, classes]} from `mask_p0 ... age_p2` columns."""
    return {h: table[cols].to_numpy(dtype=np.float64) for h, cols in PROB_COLUMNS.items()}


def oof_answers(table: pd.DataFrame, bias: Sequence[float] | None = None) -> np.ndarray:
    from fastmask.combine import answers

    return answers(head_probabilities(table), bias).astype(np.int64)


def truth_classes(table: pd.DataFrame) -> np.ndarray:
    return table["cls"].to_numpy(dtype=np.int64)


def scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """The competition's figures for 18-class answers: macro F1, accuracy, per task, per class."""
    from fastmask.schema import decode_classes

    n = NUM_CLASSES["class"]
    per_task = {}
    for task, t, p in zip(TASKS, decode_classes(truth), decode_classes(pred), strict=True):
        per_task[task] = macro_f1(t, p, NUM_CLASSES[task])
    return {
        "macro_f1": macro_f1(truth, pred, n),
        "accuracy": accuracy(truth, pred),
        "per_task_f1": per_task,
        "per_class_f1": [float(f) for f in per_class_f1(truth, pred, n)],
    }


def fold_scores(oof: pd.DataFrame, pred_column: str = "pred") -> list[dict[str, Any]]:
    """The 18-class figures of each fold's own rows."""
    out = []
    for fold, rows in sorted(oof.groupby("fold"), key=lambda kv: int(kv[0])):
        s = scores(truth_classes(rows), rows[pred_column].to_numpy(dtype=np.int64))
        out.append(
            {
                "fold": int(fold),
                "images": len(rows),
                "people": int(rows["person"].nunique()),
                "macro_f1": s["macro_f1"],
                "accuracy": s["accuracy"],
                "per_task_f1": s["per_task_f1"],
            }
        )
    return out


def check_columns(table: pd.DataFrame, source: str | Path, needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise FastmaskError(f"{source}: missing columns {', '.join(missing)}")
