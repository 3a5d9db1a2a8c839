"""Classification metrics with numpy only: the competition's macro F1 and its parts.

Macro F1 follows DATASET.md: the mean of per-class F1 over ALL classes of the task, a class
absent from both prediction and truth scoring 0. That is scikit-learn's
`f1_score(y_true, y_pred, average="macro", zero_division=0, labels=range(num_classes))`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _labels(y: Any, num_classes: int, name: str) -> np.ndarray:
    a = np.asarray(y, dtype=np.int64).ravel()
    if a.size and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"{name} must be in 0..{num_classes - 1}, got {a.min()}..{a.max()}")
    return a


def confusion(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Confusion matrix [num_classes, num_classes]: rows are true classes, columns predicted."""
    t = _labels(y_true, num_classes, "y_true")
    p = _labels(y_pred, num_classes, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels, y_pred {p.size}")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_f1(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """F1 of every class 0..num_classes-1 (0 where the class has no true or predicted sample)."""
    cm = confusion(y_true, y_pred, num_classes).astype(np.float64)
    tp = np.diag(cm)
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (row sum + column sum); 0/0 counts as 0.
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    return np.divide(2 * tp, denom, out=np.zeros(num_classes), where=denom > 0)


def macro_f1(y_true: Any, y_pred: Any, num_classes: int) -> float:
    """Mean of `per_class_f1` over all classes: the competition metric."""
    return float(per_class_f1(y_true, y_pred, num_classes).mean())


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of equal labels (0.0 for no labels)."""
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels, y_pred {p.size}")
    return float((t == p).mean()) if t.size else 0.0
