"""Losses for one task head: cross-entropy, focal, soft macro-F1, and a weighted pair of them.

Every loss takes logits [B, C] and targets that are either class indices [B] or class
probabilities [B, C] (what mixup and CutMix produce), so one code path serves both.
Losses are computed in float32 whatever the autocast dtype of the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastmask.errors import FastmaskError
from fastmask.train.config import LOSS_NAMES, parse_loss_spec  # noqa: F401 - the spec is a setting


def as_probabilities(target: Tensor, num_classes: int) -> Tensor:
    """Class indices [B] -> one-hot float [B, C]; probabilities [B, C] pass through as float."""
    if target.dim() == 1:
        return F.one_hot(target.long(), num_classes).float()
    if target.dim() != 2 or target.shape[1] != num_classes:
        raise ValueError(f"targets of shape {tuple(target.shape)} for {num_classes} classes")
    return target.float()


def smooth(target: Tensor, smoothing: float) -> Tensor:
    """Label smoothing as torch does it: (1 - s) * target + s / C."""
    if smoothing == 0.0:
        return target
    return target * (1.0 - smoothing) + smoothing / target.shape[1]


class CrossEntropy(nn.Module):
    """Cross-entropy with optional label smoothing and class weights; mean over samples."""

    weight: Tensor  # per-class weights; empty when none

    def __init__(
        self,
        num_classes: int,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", _weights(class_weights, num_classes))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs = as_probabilities(target, self.num_classes)
        weight = self.weight if self.weight.numel() else None
        return F.cross_entropy(
            logits.float(), probs, weight=weight, label_smoothing=self.label_smoothing
        )


class FocalLoss(nn.Module):
    """Focal loss -sum_c w_c t_c (1 - p_c)^gamma log p_c; gamma = 0 is `CrossEntropy`."""

    weight: Tensor  # per-class weights; empty when none

    def __init__(
        self,
        num_classes: int,
        gamma: float = 2.0,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise FastmaskError(f"focal gamma must be >= 0, got {gamma}")
        self.num_classes = num_classes
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", _weights(class_weights, num_classes))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        t = smooth(as_probabilities(target, self.num_classes), self.label_smoothing)
        logp = F.log_softmax(logits.float(), dim=1)
        if self.weight.numel():
            t = t * self.weight
        if self.gamma:
            t = t * (1.0 - logp.exp()).pow(self.gamma)
        return -(t * logp).sum(dim=1).mean()


def soft_macro_f1(probs: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Differentiable macro F1 from probabilities [B, C] and target probabilities [B, C].

    On one-hot inputs it equals scikit-learn's macro F1 with zero_division=0 over all C
    classes. `weight` (per class) turns the mean into a weighted mean.
    """
    tp = (probs * target).sum(dim=0)
    fp = (probs * (1.0 - target)).sum(dim=0)
    fn = ((1.0 - probs) * target).sum(dim=0)
    # A class absent from prediction and truth has 0/0: clamping scores it 0, like sklearn.
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1e-8)
    if weight is None or not weight.numel():
        return f1.mean()
    return (f1 * weight).sum() / weight.sum()


class SoftF1Loss(nn.Module):
    """1 - soft macro F1 over all the task's classes, computed on the batch."""

    weight: Tensor  # per-class weights; empty when none

    def __init__(
        self, num_classes: int, class_weights: Sequence[float] | Tensor | None = None
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("weight", _weights(class_weights, num_classes))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs = F.softmax(logits.float(), dim=1)
        t = as_probabilities(target, self.num_classes)
        return 1.0 - soft_macro_f1(probs, t, self.weight)


class CombinedLoss(nn.Module):
    """Weighted sum of losses, e.g. 0.7 * CE + 0.3 * soft F1."""

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        if len(losses) != len(weights):
            raise FastmaskError(f"{len(losses)} losses but {len(weights)} loss weights")
        self.losses = nn.ModuleList(losses)
        self.weights = [float(w) for w in weights]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for loss, w in zip(self.losses, self.weights, strict=True):
            total = total + w * loss(logits, target)
        return total


def build_loss(
    spec: str,
    num_classes: int,
    *,
    loss_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 2.0,
    class_weights: Sequence[float] | Tensor | None = None,
) -> nn.Module:
    """The loss `spec` names ('ce', 'focal', 'f1', 'ce+f1', ...) for `num_classes` classes.

    Label smoothing applies to CE and focal; class weights to all three. Two losses are
    summed with `loss_weights` (default equal weights summing to 1).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise FastmaskError(f"label smoothing must be in [0, 1), got {label_smoothing}")
    names = parse_loss_spec(spec)
    parts: list[nn.Module] = []
    for name in names:
        if name == "ce":
            parts.append(CrossEntropy(num_classes, label_smoothing, class_weights))
        elif name == "focal":
            parts.append(FocalLoss(num_classes, focal_gamma, label_smoothing, class_weights))
        else:
            parts.append(SoftF1Loss(num_classes, class_weights))
    if loss_weights is None:
        loss_weights = [1.0 / len(parts)] * len(parts)
    if len(parts) == 1 and list(loss_weights) == [1.0]:
        return parts[0]
    return CombinedLoss(parts, loss_weights)


def balanced_class_weights(labels: Sequence[int] | Tensor, num_classes: int) -> list[float]:
    """Inverse-frequency weights n / (C * count_c), as sklearn's 'balanced'; absent -> 0."""
    counts = torch.bincount(torch.as_tensor(labels).long().flatten(), minlength=num_classes)
    n = float(counts.sum())
    return [n / (num_classes * float(c)) if c > 0 else 0.0 for c in counts.tolist()]


def _weights(class_weights: Sequence[float] | Tensor | None, num_classes: int) -> Tensor:
    if class_weights is None:
        return torch.empty(0)
    w = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
    if w.numel() != num_classes:
        raise FastmaskError(f"{w.numel()} class weights for {num_classes} classes")
    if (w < 0).any():
        raise FastmaskError(f"class weights must be >= 0, got {w.tolist()}")
    return w
