"""The rows a run trains and validates on: person-level splits or folds, and their loaders."""

from __future__ import annotations

import hashlib
import logging
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

log = logging.getLogger(__name__)


@dataclass
class Split:
    """Training rows (labels from the training bounds) and validation rows (30/60)."""

    train: pd.DataFrame
    val: pd.DataFrame


def load_frame(c: TrainConfig) -> pd.DataFrame:
    """The data index (30/60 labels), limited to `--limit` people when asked."""
    return load_data(c)[0]


def load_data(c: TrainConfig) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """`load_frame` and the items the index skipped (`--lenient`: `{path, reason}`)."""
    import numpy as np

    from fastmask.data import build_index

    corrections = None if c.corrections == "none" else c.corrections
    index = build_index(
        c.data, corrections=corrections, age_bounds=VAL_AGE_BOUNDS, lenient=c.lenient
    )
    frame = index.frame
    if c.limit:
        people = np.sort(frame["person"].unique())
        keep = np.random.default_rng(c.seed).permutation(people)[: c.limit]
        frame = frame[frame["person"].isin(set(keep))].reset_index(drop=True)
    return frame, index.skipped


def screen_images(frame: pd.DataFrame, c: TrainConfig) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Header check of every image the run will read, before epoch 1.

    A bad file fails the run at once, listing every one; with --lenient the bad files are
    left out with a warning and returned (for excluded.csv and summary.json).
    """
    import time

    from fastmask.check import header_problems
    from fastmask.errors import DataError

    start = time.perf_counter()
    bad = header_problems(frame["path"].tolist(), c.threads or None)
    log.info(
        "header check of %d images: %d bad, %.2f s",
        len(frame),
        len(bad),
        time.perf_counter() - start,
    )
    if not bad:
        return frame, []
    listing = "\n".join(f"  {p['path']}: {p['reason']}" for p in bad)
    if not c.lenient:
        raise DataError(
            f"{len(bad)} image(s) under {c.data} cannot be read:\n{listing}\n"
            "Fix or remove them (python -m fastmask check DATA lists every problem), or pass "
            "--lenient to train without them."
        )
    log.warning("--lenient: leaving out %d image(s) that cannot be read:\n%s", len(bad), listing)
    frame = frame[~frame["path"].isin({p["path"] for p in bad})].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"no readable images left under {c.data}")
    return frame, bad


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
        on_error="skip" if c.lenient else "raise",
        mean=REFERENCE_MEAN,
        std=REFERENCE_STD,
    )
