"""Figures of finished (or running) training runs: `python -m fastmask report RUN [RUN ...]`.

Reads only the run folder (metrics.csv, summary.json, val_predictions.csv), never a model:
- curves.png: train/validation loss and validation macro F1 per epoch, runs overlaid;
- <run>_confusion.png, <run>_per_class_f1.png, <run>_worst.png (the most confidently wrong
  validation images with true and predicted labels) for each run.
A folder of `--folds` runs stands for its fold0, fold1, ... runs.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastmask.argtypes import non_negative_int
from fastmask.errors import FastmaskError
from fastmask.files import output_dir
from fastmask.plots import pyplot, save_figure, upright_thumbnail

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class RunFiles:
    """What report reads from one run folder."""

    folder: Path
    label: str
    metrics: pd.DataFrame
    summary: dict[str, Any]
    predictions: pd.DataFrame | None

    @property
    def classes(self) -> list[str]:
        return list(self.summary.get("classes", []))


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders from the arguments; a folds folder expands to its fold runs."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / "metrics.csv").exists():
            runs.append(p)
            continue
        folds = sorted(
            (d for d in p.glob("fold*") if (d / "metrics.csv").exists()),
            key=lambda d: int(d.name[4:]) if d.name[4:].isdigit() else 0,
        )
        if not folds:
            raise FastmaskError(f"{p} is not a run folder (no metrics.csv, no fold*/ runs in it)")
        runs.extend(folds)
    return runs


# The columns of the run files that the figures read.
METRICS_COLUMNS = ("epoch", "train_loss", "val_loss", "val_macro_f1")
PREDICTION_COLUMNS = ("path", "person", "true", "pred", "true_name", "pred_name", "confidence")


def load_run(folder: Path, label: str) -> RunFiles:
    from fastmask.data import read_table

    metrics = read_table(folder / "metrics.csv", METRICS_COLUMNS)
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError) as err:
        raise FastmaskError(f"cannot read run {folder}: {err}") from err
    pred_path = folder / "val_predictions.csv"
    predictions = read_table(pred_path, PREDICTION_COLUMNS) if pred_path.exists() else None
    return RunFiles(folder, label, metrics, summary, predictions)


def run_labels(folders: Sequence[Path]) -> list[str]:
    """Short unique names: the folder name, with as many parents as it takes when names repeat
    (jobs/a/multi/fold0 and jobs/b/multi/fold0: a-multi-fold0, b-multi-fold0), so no run's
    figures overwrite another's; a folder given twice gets its position in front."""
    parts = [(f.parts[1:] if f.is_absolute() else f.parts) or ("run",) for f in folders]
    names = ["-".join(p[-1:]) for p in parts]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["-".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{i}-{name}" for i, name in enumerate(names, 1)]


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: Path, title: str) -> Path:
    """Confusion matrix coloured by row share (recall), each cell labelled with its count."""
    plt = pyplot()
    n = len(names)
    size = 3.2 + 0.42 * n
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), names, rotation=90 if n > 3 else 0, fontsize=8 if n > 3 else 10)
    ax.set_yticks(range(n), names, fontsize=8 if n > 3 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_curves(runs: Sequence[RunFiles], path: Path) -> Path:
    """Loss (train solid, validation dashed) and validation macro F1 per epoch, runs overlaid."""
    plt = pyplot()
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        m, color = run.metrics, colors[i % len(colors)]
        ax_loss.plot(
            m["epoch"], m["train_loss"], "-o", ms=3, color=color, label=f"{run.label} train"
        )
        val = m[m["val_loss"].notna()]
        ax_loss.plot(
            val["epoch"], val["val_loss"], "--s", ms=3, color=color, label=f"{run.label} val"
        )
        ax_f1.plot(val["epoch"], val["val_macro_f1"], "-o", ms=3, color=color, label=run.label)
        best = run.summary.get("best_epoch")
        if best:
            f1 = float(run.summary.get("best_macro_f1", 0.0))
            ax_f1.plot([best], [f1], "*", ms=12, color=color)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_f1.set(xlabel="epoch", ylabel="macro F1", title="validation macro F1 (★ best)")
    ax_f1.set_ylim(0, 1.02)
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_per_class_f1(run: RunFiles, path: Path) -> Path:
    """Horizontal bars of per-class F1 at the best epoch, with the macro mean as a line."""
    per_class = run.summary.get("per_class_f1", {})
    if not per_class:
        raise FastmaskError(f"{run.folder}/summary.json has no per_class_f1 yet")
    title = f"{run.label}: per-class F1 (epoch {run.summary.get('best_epoch')})"
    return plot_f1_bars(list(per_class), [float(v) for v in per_class.values()], path, title)


def plot_f1_bars(names: Sequence[str], values: Sequence[float], path: Path, title: str) -> Path:
    """Horizontal F1 bars, one per class, with the macro mean as a dashed line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.32 * len(names)))
    ax.barh(range(len(names)), values, color="tab:blue")
    for i, v in enumerate(values):
        inside = v > 0.85  # long bars carry their label inside, in white
        x, ha, color = (v - 0.01, "right", "white") if inside else (v + 0.01, "left", "black")
        ax.text(x, i, f"{v:.3f}", va="center", ha=ha, color=color, fontsize=8)
    mean = float(np.mean(values))
    ax.axvline(mean, color="tab:red", ls="--", label=f"macro F1 {mean:.4f}")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("F1")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def worst_predictions(predictions: pd.DataFrame, count: int) -> pd.DataFrame:
    """Misclassified rows, most confidently wrong first."""
    wrong = predictions[predictions["true"] != predictions["pred"]]
    return wrong.sort_values("confidence", ascending=False, kind="stable").head(count)


def plot_worst(run: RunFiles, path: Path, count: int = 16) -> Path:
    """Grid of the most confidently wrong validation images, titled true / predicted."""
    plt = pyplot()
    assert run.predictions is not None
    worst = worst_predictions(run.predictions, count)
    cols = 4
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), worst.itertuples(index=False), strict=False):
        try:
            ax.imshow(upright_thumbnail(row.path, (256, 256)))
        except OSError as err:
            ax.text(0.5, 0.5, f"unreadable:\n{err}", ha="center", va="center", fontsize=7)
        person = str(row.person).split("_")[0]
        ax.set_title(
            f"true {row.true_name}\npred {row.pred_name} ({row.confidence:.2f})\n"
            f"{person}/{Path(str(row.path)).stem}",
            fontsize=7,
            color="tab:red",
        )
    total = int((run.predictions["true"] != run.predictions["pred"]).sum())
    heading = f"{run.label}: {len(worst)} of {total} misclassified validation images"
    if not total:
        heading = f"{run.label}: no misclassified validation image"
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(paths: Sequence[str | Path], out: str | Path, worst: int = 16) -> list[Path]:
    """All report figures for the runs into `out`; returns the files written."""
    from fastmask.metrics import confusion

    folders = find_runs(paths)
    runs = [load_run(f, label) for f, label in zip(folders, run_labels(folders), strict=True)]
    out = output_dir(out)
    written = [plot_curves(runs, out / "curves.png")]
    for run in runs:
        if run.summary.get("per_class_f1"):
            written.append(plot_per_class_f1(run, out / f"{run.label}_per_class_f1.png"))
        if run.predictions is None:
            log.warning(
                "%s has no val_predictions.csv: no confusion matrix or worst images", run.folder
            )
            continue
        names = run.classes
        cm = confusion(run.predictions["true"], run.predictions["pred"], len(names))
        title = (
            f"{run.label}: {run.summary.get('task')} epoch {run.summary.get('best_epoch')}, "
            f"macro F1 {float(run.summary.get('best_macro_f1', 0)):.4f}"
        )
        written.append(plot_confusion(cm, names, out / f"{run.label}_confusion.png", title))
        written.append(plot_worst(run, out / f"{run.label}_worst.png", worst))
    return written


def run_command(args: argparse.Namespace) -> int:
    written = write_report(args.runs, args.out, args.worst)
    for path in written:
        print(path)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="plot curves, confusion matrices, per-class F1 and worst images of runs",
        description="Figures of training runs, read from their run folders (no model needed).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or a --folds folder)")
    p.add_argument("--out", default="report", help="folder for the PNGs (default ./report)")
    p.add_argument(
        "--worst", type=non_negative_int, default=16, help="misclassified images to show (16)"
    )
    p.set_defaults(func=run_command)
