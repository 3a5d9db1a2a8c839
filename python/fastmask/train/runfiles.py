"""The run folder's files: checkpoints (atomic, versioned), metrics.csv, val_predictions.csv,
summary.json and the confusion plot.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastmask.errors import FastmaskError, WriteError
from fastmask.schema import TASKS, class_labels, label_maps
from fastmask.train.config import VAL_AGE_BOUNDS, TrainConfig

if TYPE_CHECKING:
    import pandas as pd

    from fastmask.train.distributed import Context
    from fastmask.train.runtime import Runtime
    from fastmask.train.splits import Split
    from fastmask.train.validation import Evaluation

CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temp file, then rename: a kill or a failed write (disk full) never
    leaves half a checkpoint, and the previous one stays; a failure names `path`."""
    import torch

    from fastmask.files import atomic_path

    # Through a Python file, so a failed write is an OSError, not torch's RuntimeError.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


# What only a resume reads: best.pt leaves it out, at a third of last.pt's size with Adam.
TRAINING_STATE = ("optimizer", "scheduler", "scaler", "position")


def weights_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """best.pt: last.pt's checkpoint without the optimiser, schedule and scaler state.

    It keeps everything predict, export and --weights read (model, ema, eval_weights,
    config, label maps, state), so it loads like any checkpoint; a run goes on from last.pt.
    """
    return {k: v for k, v in payload.items() if k not in TRAINING_STATE}


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on run_dir/.lock while a process trains into run_dir.

    flock belongs to the open file: the kernel drops it when the process ends, however it
    ends, so a crashed run never leaves the folder locked.
    """
    import fcntl
    import socket

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / ".lock", "a+")  # noqa: SIM115 -- held for the whole run
    except OSError as err:
        raise WriteError(f"cannot write {run_dir / '.lock'}: {err.strerror or err}") from err
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FastmaskError(
                f"{run_dir} is in use: {holder} is training into it. Wait for it to finish, "
                "stop it (it saves a checkpoint), or train into another --out."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def write_excluded(path: Path, excluded: list[dict[str, str]]) -> None:
    """excluded.csv: the images a --lenient run left out, and why."""
    import pandas as pd

    from fastmask.files import write_csv_atomic

    write_csv_atomic(pd.DataFrame(excluded, columns=["path", "reason"]), path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    from fastmask.models import load_torch_file

    ckpt = load_torch_file(path, "checkpoint")
    version = ckpt.get("format_version") if isinstance(ckpt, dict) else None
    if version != CHECKPOINT_VERSION:
        raise FastmaskError(
            f"{path} has checkpoint format {version!r}; this fastmask reads {CHECKPOINT_VERSION}"
        )
    return dict(ckpt)


def write_json(path: Path, obj: Any) -> None:
    from fastmask.files import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


METRIC_COLUMNS = [
    "epoch",
    "phase",
    "train_loss",
    "val_loss",
    "val_macro_f1",
    "val_acc",
    "lr",
    "images_per_s",
    "seconds",
    "train_samples",
]


def write_metrics(path: Path, history: list[dict[str, Any]], task: str) -> None:
    """Rewrite metrics.csv from the history (kept in the checkpoint, so resume never duplicates)."""
    import io

    from fastmask.files import write_text_atomic

    columns = METRIC_COLUMNS + ([f"val_f1_{t}" for t in TASKS] if task == "multi" else [])
    if any("val_macro_f1_raw" in row for row in history):
        columns.append("val_macro_f1_raw")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    write_text_atomic(path, buf.getvalue())


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_predictions(path: Path, val: pd.DataFrame, result: Evaluation, task: str) -> None:
    """val_predictions.csv: one row per validation image, so `report` needs no model."""
    import pandas as pd

    names = class_labels(task)
    true, pred = result.true, result.pred
    table = pd.DataFrame(
        {
            "path": val["path"].to_numpy(),
            "person": val["person"].to_numpy(),
            "true": true,
            "pred": pred,
            "true_name": [names[i] for i in true],
            "pred_name": [names[i] for i in pred],
            "confidence": np.round(result.confidence, 6),
        }
    )
    for t, p in result.probs.items():
        prefix = "p" if task != "multi" else f"{t}_p"
        if task == "multi":
            table[f"{t}_true"] = result.truth[t]
            table[f"{t}_pred"] = p.argmax(axis=1)
        for k in range(p.shape[1]):
            table[f"{prefix}{k}"] = np.round(p[:, k], 6)
    from fastmask.files import write_text_atomic

    write_text_atomic(path, table.to_csv(index=False))


def best_record(result: Evaluation, task: str) -> dict[str, Any]:
    names = class_labels(task)
    return {
        "val_acc": result.accuracy,
        "val_loss": result.loss,
        "per_class_f1": {n: float(f) for n, f in zip(names, result.per_class_f1, strict=True)},
        "per_task_f1": dict(result.task_f1),
    }


def checkpoint_payload(rt: Runtime, state: dict[str, Any], next_epoch: int) -> dict[str, Any]:
    c = rt.config
    return {
        "format_version": CHECKPOINT_VERSION,
        "model": rt.raw_model.state_dict(),
        "optimizer": rt.optimizer.state_dict(),
        "scheduler": rt.schedule.state_dict(),
        "scaler": rt.scaler.state_dict(),
        "epoch": next_epoch,
        # Loader plan and every RNG of an epoch derive from (seed, epoch): this is their state.
        "sampler": {"seed": c.seed, "epoch": next_epoch, "oversample": c.oversample},
        "config": c.to_json(),
        "label_maps": label_maps(c.task),
        "state": json.loads(json.dumps(state, default=_json_default)),
        **(
            {"ema": rt.ema.model.state_dict(), "eval_weights": "ema"}
            if rt.ema is not None
            else {"eval_weights": "model"}
        ),
    }


def inference_weights(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The state dict that validation scored: the EMA weights when the run kept them."""
    return dict(ckpt["ema"] if ckpt.get("eval_weights") == "ema" else ckpt["model"])


def make_summary(
    c: TrainConfig,
    ctx: Context,
    split: Split,
    state: dict[str, Any],
    fingerprint: str,
    finished: bool = False,
) -> dict[str, Any]:
    import torch

    from fastmask import __version__

    history = state["history"]
    train_s = sum(r["train_seconds"] for r in history)
    images = sum(r["train_samples"] for r in history)
    best = state.get("best", {})
    return {
        "task": c.task,
        "model": c.model,
        "classes": class_labels(c.task),
        "label_maps": label_maps(c.task),
        "best_epoch": state["best_epoch"],
        "best_macro_f1": max(state["best_macro_f1"], 0.0),
        "per_class_f1": best.get("per_class_f1", {}),
        "per_task_f1": best.get("per_task_f1", {}),
        "best_val_acc": best.get("val_acc"),
        "best_val_loss": best.get("val_loss"),
        "epochs_run": len(history),
        "stopped_early": state["stopped_early"],
        "finished": finished,
        "final_checkpoint": "last.pt" if c.extra_epochs else "best.pt",
        "wall_s": round(state["wall_s"], 3),
        "train_s": round(train_s, 3),
        "images_per_s": round(images / train_s, 2) if train_s else 0.0,
        "samples_per_epoch": dict(state["samples_per_epoch"]),
        "train_people": int(split.train["person"].nunique()),
        "train_images": len(split.train),
        "val_people": sorted(split.val["person"].unique().tolist()),
        "val_images": len(split.val),
        "val_age_bounds": list(VAL_AGE_BOUNDS),
        "train_age_bounds": list(c.age_bounds),
        "data_fingerprint": fingerprint,
        "excluded": list(state.get("excluded", [])),
        "world_size": ctx.world_size,
        "distributed": ctx.distributed,
        "device": str(ctx.device),
        "versions": {"fastmask": __version__, "torch": torch.__version__},
    }


def plot_run_confusion(run_dir: Path, result: Evaluation, task: str, epoch: int) -> None:
    from fastmask.metrics import confusion
    from fastmask.report import plot_confusion

    names = class_labels(task)
    cm = confusion(result.true, result.pred, len(names))
    title = f"{task} · epoch {epoch} · macro F1 {result.macro_f1:.4f}"
    plot_confusion(cm, names, run_dir / "confusion.png", title)
