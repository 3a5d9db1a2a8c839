"""What the loop runs with: loss, optimiser, learning-rate schedule, batch mixing, AMP.

`build_runtime` resolves them once per split into a `Runtime`; every random choice is seeded
by (seed, epoch), so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fastmask.errors import FastmaskError
from fastmask.schema import NUM_CLASSES, TASKS, heads, split_targets
from fastmask.train.config import TrainConfig, parse_floats
from fastmask.train.distributed import Context

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


class MultiTaskLoss:
    """Weighted sum of one loss per head; single-task runs have one head of weight 1."""

    def __init__(self, losses: dict[str, nn.Module], weights: dict[str, float]) -> None:
        self.losses = losses
        self.weights = weights

    def __call__(self, outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> Tensor:
        total: Tensor | None = None
        for task, loss in self.losses.items():
            term = self.weights[task] * loss(outputs[task], targets[task])
            total = term if total is None else total + term
        assert total is not None
        return total

    def to(self, device: torch.device) -> MultiTaskLoss:
        for loss in self.losses.values():
            loss.to(device)
        return self


def build_criterion(c: TrainConfig, train_labels: np.ndarray) -> MultiTaskLoss:
    import torch

    from fastmask.losses import balanced_class_weights, build_loss

    targets = split_targets(torch.tensor(train_labels), c.task)
    losses = {}
    for task in heads(c.task):
        n = NUM_CLASSES[task]
        weights: list[float] | None = None
        if c.class_weights == "balanced":
            weights = balanced_class_weights(targets[task], n)
        elif c.class_weights != "none":
            weights = parse_floats(c.class_weights, "--class-weights")
        losses[task] = build_loss(
            c.loss,
            n,
            loss_weights=c.loss_weights,
            label_smoothing=c.label_smoothing,
            focal_gamma=c.focal_gamma,
            class_weights=weights,
        )
    task_weight = dict(zip(TASKS, c.task_weights, strict=True)) if c.task == "multi" else {}
    return MultiTaskLoss(losses, {t: task_weight.get(t, 1.0) for t in losses})


def build_optimizer(c: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if c.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=True
        )
    if c.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)


@dataclass
class Schedule:
    """Learning-rate factor as a pure function of progress in epochs (e.g. 2.5).

    Linear warm-up, then cosine to 0 or step decay over all epochs including extra epochs.
    Being a function of progress, resuming needs only the epoch, not a scheduler's state.
    """

    kind: str
    total_epochs: int
    warmup_epochs: float
    step_size: int
    step_gamma: float

    def factor(self, progress: float) -> float:
        if self.warmup_epochs > 0 and progress < self.warmup_epochs:
            return max(progress / self.warmup_epochs, 1e-3)
        if self.kind == "cosine":
            span = max(self.total_epochs - self.warmup_epochs, 1e-9)
            t = min(max((progress - self.warmup_epochs) / span, 0.0), 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * t))
        if self.kind == "step":
            size = self.step_size or max(1, self.total_epochs // 3)
            return float(self.step_gamma ** int(progress // size))
        return 1.0

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: 'auto' is bf16 (else fp16) on CUDA and off on the CPU."""
    import torch

    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" and device.type != "cuda":
        raise FastmaskError("--amp fp16 needs CUDA; use --amp bf16 or off on the CPU")
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def epoch_seed(seed: int, epoch: int) -> int:
    """One seed per (run seed, epoch) for torch's global RNG (dropout, stochastic depth)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class BatchMixer:
    """CutMix of left/right halves and mixup on the float batch, seeded by (seed, epoch).

    CutMix swaps the left or right half of each image with another sample's, so the mask
    region (centre-bottom of the face) stays whole on one side; labels mix by area.
    """

    def __init__(self, c: TrainConfig, epoch: int) -> None:
        self.cutmix, self.mixup, self.alpha = c.cutmix, c.mixup, c.mixup_alpha
        self.rng = np.random.default_rng([c.seed, epoch, 0x6D6978])

    def __call__(self, x: Tensor, targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        import torch.nn.functional as F

        if not (self.cutmix or self.mixup):
            return x, targets
        u = self.rng.random()
        if u >= self.cutmix + self.mixup:
            return x, targets
        perm_np = self.rng.permutation(x.shape[0])
        perm = torch_from_numpy(perm_np).to(x.device)
        if u < self.cutmix:
            width = x.shape[-1]
            half = width // 2
            cols = slice(0, half) if self.rng.random() < 0.5 else slice(half, width)
            x = x.clone()
            x[..., cols] = x[perm][..., cols]
            lam = 1.0 - (cols.stop - cols.start) / width
        else:
            lam = float(self.rng.beta(self.alpha, self.alpha))
            x = x * lam + x[perm] * (1.0 - lam)
        mixed = {}
        for task, y in targets.items():
            one_hot = F.one_hot(y, NUM_CLASSES[task]).float()
            mixed[task] = one_hot * lam + one_hot[perm] * (1.0 - lam)
        return x, mixed


def torch_from_numpy(a: np.ndarray) -> Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


@dataclass
class Runtime:
    """What one process needs in the loop: model, optimiser and settings resolved once."""

    config: TrainConfig
    ctx: Context
    model: nn.Module  # what trains: maybe DDP- and compile-wrapped
    eval_model: nn.Module  # what validates: compiled but not DDP, so ranks need not sync
    raw_model: nn.Module  # what gets saved
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: Any
    criterion: MultiTaskLoss
    autocast_dtype: torch.dtype | None
    ema: WeightEma | None = None

    def autocast(self) -> Any:
        import torch

        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.autocast_dtype)

    def prepare(self, images: Tensor) -> Tensor:
        """The loader's normalised float batch on the device, in the model's memory format."""
        import torch

        x = images.to(self.ctx.device, non_blocking=True)
        fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)


class WeightEma:
    """Exponential moving average of a model's weights and buffers (as timm's ModelEmaV2).

    `model` is a frozen copy in eval mode; `update` after every optimiser step moves each
    floating-point tensor towards the trained model's by (1 - decay) and copies the rest.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def update(self, model: nn.Module) -> None:
        import torch

        with torch.no_grad():
            mine = self.model.state_dict()
            for name, value in model.state_dict().items():
                if value.dtype.is_floating_point:
                    mine[name].lerp_(value, 1.0 - self.decay)
                else:
                    mine[name].copy_(value)


@contextmanager
def determinism(enabled: bool, torch_threads: int = 0) -> Iterator[None]:
    """Deterministic kernels and torch's CPU thread count for the run, restored afterwards."""
    import torch

    threads_before = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=warn_before)
        torch.backends.cudnn.benchmark = before[1]
        torch.set_num_threads(threads_before)


def build_runtime(
    c: TrainConfig, ctx: Context, train_labels: np.ndarray, resuming: bool = False
) -> Runtime:
    """Model, optimiser, schedule and loss of a run. `resuming` (last.pt will overwrite the
    weights): the starting weights are not fetched, so a run resumes offline or after its
    --weights file moved."""
    import torch

    from fastmask.models import build_model

    torch.manual_seed(c.seed)  # the initial weights depend on the seed only
    pretrained, weights = (False, None) if resuming else (c.pretrained, c.weights)
    raw = build_model(c.model, c.task, pretrained=pretrained, weights=weights).to(ctx.device)
    if c.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    model: nn.Module = raw
    if c.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    eval_model = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
    dtype = amp_dtype(c.amp, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=dtype == torch.float16)
    schedule = Schedule(c.scheduler, c.total_epochs, c.warmup_epochs, c.step_size, c.step_gamma)
    ema = WeightEma(raw, c.ema_decay) if c.ema_decay > 0 else None
    return Runtime(
        config=c,
        ctx=ctx,
        model=model,
        eval_model=eval_model,
        raw_model=raw,
        optimizer=build_optimizer(c, raw),
        schedule=schedule,
        scaler=scaler,
        criterion=build_criterion(c, train_labels).to(ctx.device),
        autocast_dtype=dtype,
        ema=ema,
    )
