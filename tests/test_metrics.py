from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from fastmask.metrics import accuracy, confusion, macro_f1, per_class_f1


@pytest.mark.parametrize("num_classes", [2, 3, 18])
@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_on_random_labels(num_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    # A skewed truth so some classes are absent from truth, prediction, or both.
    t = rng.integers(0, max(1, num_classes - 1), n)
    p = np.where(rng.random(n) < 0.6, t, rng.integers(0, num_classes, n))
    labels = list(range(num_classes))
    want = f1_score(t, p, average="macro", zero_division=0, labels=labels)
    assert macro_f1(t, p, num_classes) == pytest.approx(want, abs=1e-12)
    want_each = f1_score(t, p, average=None, zero_division=0, labels=labels)
    np.testing.assert_allclose(per_class_f1(t, p, num_classes), want_each, atol=1e-12)
    np.testing.assert_array_equal(
        confusion(t, p, num_classes), confusion_matrix(t, p, labels=labels)
    )
    assert accuracy(t, p) == pytest.approx(accuracy_score(t, p))


def test_absent_class_scores_zero() -> None:
    # Class 2 is in neither truth nor prediction: it still counts, as 0, in the mean.
    assert macro_f1([0, 1, 0, 1], [0, 1, 0, 1], 3) == pytest.approx(2 / 3)
    assert per_class_f1([0, 1], [0, 1], 3).tolist() == [1.0, 1.0, 0.0]


def test_rejects_out_of_range_and_mismatched() -> None:
    with pytest.raises(ValueError, match="0..2"):
        macro_f1([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="labels"):
        confusion([0, 1], [0], 3)
    assert accuracy([], []) == 0.0
