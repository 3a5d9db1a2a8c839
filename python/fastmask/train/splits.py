"""The rows a run trains and validates on: person-level splits or folds, and their loaders."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fastmask.crops import face_crop_boxes, loader_augment
from fastmask.errors import FastmaskError
from fastmask.train.config import VAL_AGE_BOUNDS, TrainConfig
from fastmask.train.distributed import Context

if TYPE_CHECKING:
    import pandas as pd

    from fastmask.loader import Loader


@dataclass
class Split:
    """Training rows (labels from the training bounds) and validation rows (30/60)."""

    train: pd.DataFrame
    val: pd.DataFrame


def load_frame(c: TrainConfig) -> pd.DataFrame:
    """The data index (30/60 labels), limited to `--limit` people when asked."""
    import numpy as np

    from fastmask.data import build_index

    corrections = None if c.corrections == "none" else c.corrections
    frame = build_index(c.data, corrections=corrections, age_bounds=VAL_AGE_BOUNDS).frame
    if c.limit:
        people = np.sort(frame["person"].unique())
        keep = np.random.default_rng(c.seed).permutation(people)[: c.limit]
        frame = frame[frame["person"].isin(set(keep))].reset_index(drop=True)
    return frame


def training_rows(frame: pd.DataFrame, c: TrainConfig) -> pd.DataFrame:
    """Rows relabelled with the training age bounds, border ages dropped."""
    from fastmask.data import with_labels

    rows = with_labels(frame, c.age_bounds)
    for lo, hi in c.drop_ages:
        rows = rows[~rows["age"].between(lo, hi)]
    if rows.empty:
        raise FastmaskError("no training images left after --drop-ages / --limit")
    return rows.reset_index(drop=True)


def make_splits(frame: pd.DataFrame, c: TrainConfig) -> list[Split]:
    """One person-level split, or `--folds K` person-level folds."""
    from fastmask.data import kfold_people, split_people

    pairs = (
        kfold_people(frame, c.folds, c.seed)
        if c.folds > 1
        else [split_people(frame, c.val_fraction, c.seed)]
    )
    return [Split(training_rows(train, c), val) for train, val in pairs]


def data_fingerprint(frame: pd.DataFrame) -> str:
    """Hash of every image's person, stem and labels: the data a run saw, corrections included."""
    h = hashlib.sha256()
    cols = ["person", "stem", "mask", "gender", "age"]
    for row in frame.sort_values(["person", "stem"])[cols].itertuples(index=False):
        h.update(("|".join(map(str, row)) + "\n").encode())
    return h.hexdigest()[:16]


def make_loader(
    c: TrainConfig, frame: pd.DataFrame, labels: np.ndarray, ctx: Context, *, train: bool
) -> Loader:
    """The native loader for training (sharded by rank, oversampled) or evaluation (in order)."""
    from fastmask.loader import REFERENCE_MEAN, REFERENCE_STD, Loader

    return Loader(
        frame["path"].tolist(),
        labels,
        batch_size=c.batch_size,
        image_size=c.image_size,
        train=train,
        augment=loader_augment(c.augment, c.to_json()),
        crop_boxes=face_crop_boxes(c, frame["path"].tolist()),
        threads=c.threads or None,
        seed=c.seed,
        prefetch=c.prefetch,
        cache=c.cache,
        oversample="balanced" if train and c.oversample == "balanced" else None,
        rank=ctx.rank if train else 0,
        world_size=ctx.world_size if train else 1,
        drop_last=train,
        device=ctx.device if ctx.device.type == "cuda" else None,
        # Float (x/255 - mean) / std: written by the workers on the CPU, done on the GPU there.
        normalize=True,
        mean=REFERENCE_MEAN,
        std=REFERENCE_STD,
    )
