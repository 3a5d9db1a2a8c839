"""The task and label schema, in one place: tasks, their heads, class names and encodings.

A *task* is what one model learns: `mask`, `gender`, `age`, or `multi` (one backbone with
the three heads). A *head* is one of the three label groups; the 18 competition classes are
`mask * 6 + gender * 3 + age band`. Every module that needs heads, label names, the
18-class code or a model's outputs by head asks this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fastmask.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor

MASK_NAMES = ("wear", "incorrect", "not_wear")
GENDER_NAMES = ("male", "female")
AGE_NAMES = ("<30", "30-59", ">=60")
# The competition's bands; validation and every 18-class score use them.
DEFAULT_AGE_BOUNDS = (30, 60)
TASKS = ("mask", "gender", "age")
MULTI = "multi"
TRAIN_TASKS = (*TASKS, MULTI)
LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "mask": MASK_NAMES,
    "gender": GENDER_NAMES,
    "age": AGE_NAMES,
}
NUM_HEAD_CLASSES = {t: len(names) for t, names in LABEL_NAMES.items()}
NUM_COMPETITION_CLASSES = (
    NUM_HEAD_CLASSES["mask"] * NUM_HEAD_CLASSES["gender"] * NUM_HEAD_CLASSES["age"]
)
NUM_CLASSES = {**NUM_HEAD_CLASSES, "class": NUM_COMPETITION_CLASSES}
# The index column holding each task's label (multi trains on the 18-class id).
LABEL_COLUMNS = {"mask": "mask", "gender": "gender", "age": "age_band", MULTI: "cls"}


def heads(task: str) -> tuple[str, ...]:
    """The heads a model of `task` has: all three for multi, else the task itself."""
    if task == MULTI:
        return TASKS
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TRAIN_TASKS)}")
    return (task,)


def encode_class(mask: Any, gender: Any, age_band: Any) -> Any:
    """Class 0..17 = mask * 6 + gender * 3 + age band (ints or numpy arrays)."""
    return mask * 6 + gender * 3 + age_band


def decode_class(cls: int) -> tuple[int, int, int]:
    """Inverse of `encode_class`: (mask, gender, age band)."""
    if not 0 <= int(cls) < NUM_COMPETITION_CLASSES:
        raise DataError(f"class {cls!r} is outside 0..{NUM_COMPETITION_CLASSES - 1}")
    c = int(cls)
    return c // 6, (c // 3) % 2, c % 3


def decode_classes(cls: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Array version of `decode_class`."""
    c = np.asarray(cls, dtype=np.int64)
    if c.size and (c.min() < 0 or c.max() >= NUM_COMPETITION_CLASSES):
        raise DataError(
            f"classes must be in 0..{NUM_COMPETITION_CLASSES - 1}, "
            f"got values from {c.min()} to {c.max()}"
        )
    return c // 6, (c // 3) % 2, c % 3


def class_names() -> list[str]:
    """Readable names of the 18 classes, e.g. `wear/male/<30`."""
    return [
        f"{MASK_NAMES[m]}/{GENDER_NAMES[g]}/{AGE_NAMES[a]}"
        for m, g, a in map(decode_class, range(NUM_COMPETITION_CLASSES))
    ]


def class_labels(task: str) -> list[str]:
    """Names of the classes a task's metric counts: its head's, or the 18 for multi."""
    return class_names() if task == MULTI else list(LABEL_NAMES[heads(task)[0]])


def label_maps(task: str) -> dict[str, list[str]]:
    """{head: class names} of a task's model (plus the 18 classes for multi)."""
    maps = {t: list(LABEL_NAMES[t]) for t in heads(task)}
    if task == MULTI:
        maps["class"] = class_names()
    return maps


def task_labels(frame: pd.DataFrame, task: str) -> np.ndarray:
    """The loader's label per index row: the task's class, or the 18-class id for multi."""
    return frame[LABEL_COLUMNS[task]].to_numpy(dtype=np.int64)


def split_targets(labels: Tensor, task: str) -> dict[str, Tensor]:
    """Loader labels -> {head: class index}; multi decodes the 18-class id (on any device)."""
    if task != MULTI:
        return {task: labels}
    return {"mask": labels // 6, "gender": (labels // 3) % 2, "age": labels % 3}


def outputs_by_head(out: Any, task: str) -> dict[str, Tensor]:
    """A model's output as {head: logits}: multi models return a mapping already."""
    return dict(out) if task == MULTI else {task: out}


def prediction_columns(task: str) -> dict[str, list[str]]:
    """{head: probability columns} of a prediction CSV: `p0..` or `mask_p0..` for multi."""
    prefix = {t: f"{t}_" if task == MULTI else "" for t in heads(task)}
    return {t: [f"{prefix[t]}p{k}" for k in range(NUM_CLASSES[t])] for t in heads(task)}
