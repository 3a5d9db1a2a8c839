from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from fastmask.errors import FastmaskError
from fastmask.losses import (
    CombinedLoss,
    CrossEntropy,
    FocalLoss,
    SoftF1Loss,
    balanced_class_weights,
    build_loss,
    soft_macro_f1,
)


def _batch(seed: int, n: int = 32, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("num_classes", [2, 3, 18])
@pytest.mark.parametrize("seed", range(4))
def test_soft_f1_on_hard_predictions_is_sklearn_macro_f1(num_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40
    t = rng.integers(0, num_classes, n)
    p = np.where(rng.random(n) < 0.5, t, rng.integers(0, num_classes, n))
    want = f1_score(t, p, average="macro", zero_division=0, labels=list(range(num_classes)))
    probs = F.one_hot(torch.as_tensor(p), num_classes).double()
    target = F.one_hot(torch.as_tensor(t), num_classes).double()
    assert float(soft_macro_f1(probs, target)) == pytest.approx(want, abs=1e-9)
    # Through the loss: logits so large that softmax is exactly one-hot.
    loss = SoftF1Loss(num_classes)(probs.float() * 1e4, torch.as_tensor(t))
    assert 1.0 - float(loss) == pytest.approx(want, abs=1e-6)


def test_soft_f1_is_differentiable_and_weighted() -> None:
    logits, target = _batch(0)
    logits.requires_grad_(True)
    SoftF1Loss(3)(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    probs = F.one_hot(torch.tensor([0, 1, 1]), 3).float()
    target = F.one_hot(torch.tensor([0, 1, 2]), 3).float()
    # Per-class F1 is [1, 2/3, 0]; weights 1, 0, 0 keep only class 0.
    assert float(soft_macro_f1(probs, target, torch.tensor([1.0, 0.0, 0.0]))) == 1.0


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_cross_entropy_label_smoothing_matches_torch(smoothing: float) -> None:
    logits, target = _batch(1)
    got = CrossEntropy(3, label_smoothing=smoothing)(logits, target)
    want = F.cross_entropy(logits, target, label_smoothing=smoothing)
    assert float(got) == pytest.approx(float(want), abs=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.5]])
def test_focal_with_gamma_zero_is_cross_entropy(
    smoothing: float, weights: list[float] | None
) -> None:
    logits, target = _batch(2)
    focal = FocalLoss(3, gamma=0.0, label_smoothing=smoothing, class_weights=weights)
    ce = CrossEntropy(3, label_smoothing=smoothing, class_weights=weights)
    assert float(focal(logits, target)) == pytest.approx(float(ce(logits, target)), abs=1e-6)
    w = None if weights is None else torch.tensor(weights)
    soft = F.one_hot(target, 3).float()
    want = F.cross_entropy(logits, soft, weight=w, label_smoothing=smoothing)
    assert float(ce(logits, target)) == pytest.approx(float(want), abs=1e-6)


def test_focal_down_weights_easy_samples() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.0, 0.0]])
    target = torch.tensor([0, 0])
    per_easy = FocalLoss(3, gamma=2.0)(logits[:1], target[:1]) / CrossEntropy(3)(
        logits[:1], target[:1]
    )
    per_hard = FocalLoss(3, gamma=2.0)(logits[1:], target[1:]) / CrossEntropy(3)(
        logits[1:], target[1:]
    )
    assert float(per_easy) < float(per_hard) < 1.0


def test_soft_targets_equal_mixed_hard_losses() -> None:
    # CE is linear in the target: a mixed target equals the mixed losses (mixup / CutMix).
    logits, a = _batch(3)
    b = torch.roll(a, 1)
    lam = 0.3
    mixed = lam * F.one_hot(a, 3).float() + (1 - lam) * F.one_hot(b, 3).float()
    ce = CrossEntropy(3)
    want = lam * ce(logits, a) + (1 - lam) * ce(logits, b)
    assert float(ce(logits, mixed)) == pytest.approx(float(want), abs=1e-6)


def test_build_loss_combinations() -> None:
    logits, target = _batch(4)
    loss = build_loss("ce+f1", 3, loss_weights=[0.7, 0.3])
    assert isinstance(loss, CombinedLoss)
    want = 0.7 * CrossEntropy(3)(logits, target) + 0.3 * SoftF1Loss(3)(logits, target)
    assert float(loss(logits, target)) == pytest.approx(float(want), abs=1e-6)
    assert isinstance(build_loss("focal", 3, focal_gamma=1.0), FocalLoss)
    assert isinstance(build_loss("ce", 3), CrossEntropy)
    with pytest.raises(FastmaskError, match="ce\\+f1"):
        build_loss("ce+dice", 3)
    with pytest.raises(FastmaskError, match="2 losses but 1"):
        build_loss("ce+f1", 3, loss_weights=[1.0])
    with pytest.raises(FastmaskError, match="2 class weights for 3"):
        build_loss("ce", 3, class_weights=[1.0, 2.0])


def test_balanced_class_weights() -> None:
    assert balanced_class_weights([0, 0, 0, 1], 3) == pytest.approx([4 / 9, 4 / 3, 0.0])
