"""Validation: score the model on the held-out people, gathered over ranks, with 30/60 bands."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fastmask.schema import (
    NUM_CLASSES,
    encode_class,
    heads,
    outputs_by_head,
    split_targets,
    task_labels,
)
from fastmask.train.config import TrainConfig
from fastmask.train.distributed import Context, all_gather
from fastmask.train.splits import make_loader

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from fastmask.loader import Loader
    from fastmask.train.runtime import Runtime


@dataclass
class Evaluation:
    """Validation results over all ranks: loss, per-head probabilities, the metric."""

    loss: float
    probs: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    macro_f1: float
    accuracy: float
    per_class_f1: np.ndarray
    task_f1: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def pred(self) -> np.ndarray:
        """Predicted class of the run's metric: the task's class, or the 18-class id."""
        preds = {t: p.argmax(axis=1) for t, p in self.probs.items()}
        if len(preds) == 1:
            return next(iter(preds.values()))
        return np.asarray(encode_class(preds["mask"], preds["gender"], preds["age"]))

    @property
    def true(self) -> np.ndarray:
        if len(self.truth) == 1:
            return next(iter(self.truth.values()))
        return np.asarray(encode_class(self.truth["mask"], self.truth["gender"], self.truth["age"]))

    @property
    def confidence(self) -> np.ndarray:
        """Probability of the predicted class (product over heads for multi)."""
        conf = np.ones(len(self.pred))
        for p in self.probs.values():
            conf = conf * p.max(axis=1)
        return conf


def val_rows(val: pd.DataFrame, ctx: Context) -> np.ndarray:
    """This rank's validation rows: every world_size-th, so gathering by index restores order."""
    return np.arange(len(val))[ctx.rank :: ctx.world_size]


def make_val_loader(c: TrainConfig, val: pd.DataFrame, ctx: Context) -> Loader | None:
    """The evaluation loader of this rank's rows, built once so --cache serves every epoch."""
    shard = val.iloc[val_rows(val, ctx)]
    if shard.empty:
        return None
    return make_loader(c, shard, task_labels(shard, c.task), ctx, train=False)


def evaluate(
    rt: Runtime, val: pd.DataFrame, loader: Loader | None, model: nn.Module | None = None
) -> Evaluation:
    """Score the model (or `model`, e.g. the EMA weights) on the validation rows (30/60
    labels); ranks share the rows."""
    import torch

    from fastmask.metrics import accuracy, macro_f1, per_class_f1

    c, ctx = rt.config, rt.ctx
    start = time.perf_counter()
    head_list = heads(c.task)
    rows = val_rows(val, ctx)
    probs: dict[str, list[np.ndarray]] = {t: [] for t in head_list}
    loss_sum = 0.0
    if ctx.distributed:
        import torch.distributed as dist

        # BatchNorm statistics drift apart per rank; all ranks score with rank 0's.
        for buffer in (model or rt.raw_model).buffers():
            dist.broadcast(buffer, 0)
    net = model if model is not None else rt.eval_model
    net.eval()
    if loader is not None:
        with torch.no_grad():
            for images, batch_labels in loader:
                x = rt.prepare(images)
                targets = split_targets(batch_labels.to(ctx.device), c.task)
                with rt.autocast():
                    outputs = outputs_by_head(net(x), c.task)
                loss_sum += float(rt.criterion(outputs, targets)) * int(batch_labels.shape[0])
                for t in head_list:
                    probs[t].append(torch.softmax(outputs[t].float(), dim=1).cpu().numpy())
    local = {t: np.concatenate(v) if v else np.zeros((0, NUM_CLASSES[t])) for t, v in probs.items()}
    gathered = all_gather((rows, local, loss_sum), ctx)
    order = np.concatenate([g[0] for g in gathered])
    inverse = np.argsort(order)
    merged = {t: np.concatenate([g[1][t] for g in gathered])[inverse] for t in head_list}
    loss = sum(g[2] for g in gathered) / max(len(val), 1)
    truth = {t: task_labels(val, t) for t in head_list}
    result = Evaluation(loss, merged, truth, 0.0, 0.0, np.zeros(0))
    n_classes = NUM_CLASSES["class" if c.task == "multi" else c.task]
    result.macro_f1 = macro_f1(result.true, result.pred, n_classes)
    result.accuracy = accuracy(result.true, result.pred)
    result.per_class_f1 = per_class_f1(result.true, result.pred, n_classes)
    if c.task == "multi":
        result.task_f1 = {
            t: macro_f1(truth[t], merged[t].argmax(axis=1), NUM_CLASSES[t]) for t in head_list
        }
    result.seconds = time.perf_counter() - start
    return result
