"""`python -m fastmask evaluate`: score a submission against the truth, as the competition did.

Macro F1 over the 18 classes (mean of per-class F1, a class absent from both prediction and
truth scoring 0), accuracy, per-class F1, per-task macro F1 and the 18x18 confusion matrix.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fastmask.combine import check_ids, read_submission
from fastmask.metrics import accuracy, confusion, macro_f1, per_class_f1
from fastmask.schema import NUM_CLASSES, TASKS, class_names, decode_classes

log = logging.getLogger(__name__)


def score(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """All figures for 18-class predictions against the truth."""
    result: dict[str, Any] = {
        "images": int(len(truth)),
        "macro_f1": macro_f1(truth, pred, NUM_CLASSES["class"]),
        "accuracy": accuracy(truth, pred),
        "per_class_f1": [float(f) for f in per_class_f1(truth, pred, NUM_CLASSES["class"])],
        "classes": class_names(),
        "confusion": confusion(truth, pred, NUM_CLASSES["class"]).tolist(),
    }
    for task, p, t in zip(TASKS, decode_classes(pred), decode_classes(truth), strict=True):
        result[f"{task}_macro_f1"] = macro_f1(t, p, NUM_CLASSES[task])
        result[f"{task}_accuracy"] = accuracy(t, p)
    return result


def evaluate(pred: str | Path, truth: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Score `pred` against `truth` (both ImageID,ans; same ImageIDs, any order)."""
    truth_table = read_submission(truth)
    pred_table = read_submission(pred)
    ids = truth_table["ImageID"].tolist()
    check_ids(truth, ids, ids, truth)
    check_ids(pred, pred_table["ImageID"].tolist(), ids, truth)
    p = pred_table.set_index("ImageID").loc[ids, "ans"].to_numpy()
    answers = truth_table["ans"].to_numpy()
    if len(answers) > 1 and (answers == answers[0]).all():
        # eval/info.csv has this shape (every ans 0, a placeholder): scoring against it is
        # almost surely a mix-up, yet a tiny hand-made truth may be like it too.
        log.warning(
            "%s: every one of its %d answers is %d; is it the placeholder eval/info.csv "
            "rather than the truth?", truth, len(answers), int(answers[0])
        )  # fmt: skip
    result = score(p, answers)
    if out is not None:
        from fastmask.files import output_dir, write_text_atomic
        from fastmask.report import plot_confusion

        out = output_dir(out)
        write_text_atomic(out / "evaluation.json", json.dumps(result, indent=2) + "\n")
        plot_confusion(
            np.asarray(result["confusion"]),
            class_names(),
            out / "confusion.png",
            f"{Path(pred).name}: macro F1 {result['macro_f1']:.4f}",
        )
        log.info("wrote %s and %s", out / "evaluation.json", out / "confusion.png")
    return result


def format_result(r: dict[str, Any]) -> str:
    lines = [
        f"images {r['images']}  macro F1 {r['macro_f1']:.4f}  accuracy {r['accuracy']:.4f}",
        "per task macro F1: " + ", ".join(f"{t} {r[f'{t}_macro_f1']:.4f}" for t in TASKS),
        "per class F1:",
    ]
    for name, f1 in zip(r["classes"], r["per_class_f1"], strict=True):
        lines.append(f"  {name:24s} {f1:.4f}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    print(format_result(evaluate(args.pred, args.truth, args.out)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="macro F1, accuracy, per-class and per-task F1 of a submission",
        description="Score a submission (ImageID,ans) against the truth (ImageID,ans).",
    )
    p.add_argument("--pred", required=True, help="submission CSV")
    p.add_argument("--truth", required=True, help="truth CSV, e.g. eval/truth.csv from synth")
    p.add_argument("--out", help="folder for evaluation.json and confusion.png")
    p.set_defaults(func=_run)
