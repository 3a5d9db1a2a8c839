"""Training: `python -m fastmask train {mask,gender,age,multi} --data DATA [options]`.

files -> data index -> native loader -> **trainer** -> predictions -> combine -> CSV

One readable loop (`train_one_epoch`, `evaluate`) in the manner of nanoGPT and timm. A run
folder `runs/<task>/<name>/` (or `--out`) receives config.json, metrics.csv (one row per
epoch), summary.json, best.pt, last.pt, val_predictions.csv and confusion.png.

Every random choice of an epoch (loader plan and augmentation, dropout, mixup and CutMix) is
drawn from generators seeded by (seed, epoch), so `--resume` of a killed run reaches the
same result as an uninterrupted run. Validation labels always use age bounds 30/60, whatever
`--age-bounds` the training labels use. Under torchrun, DDP shards the loader by rank,
reduces metrics across ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastmask.data import (
    AGE_NAMES,
    DEFAULT_AGE_BOUNDS,
    GENDER_NAMES,
    MASK_NAMES,
    NUM_CLASSES,
    TASKS,
    check_age_bounds,
    class_names,
    encode_class,
)
from fastmask.errors import FastmaskError

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import Tensor, nn

    from fastmask.loader import Loader

log = logging.getLogger(__name__)

TRAIN_TASKS = ("mask", "gender", "age", "multi")
DEFAULT_MODELS = {
    "mask": "efficientnet_b0",
    "gender": "efficientnet_b3",
    "age": "resnet152",
    "multi": "efficientnet_b0",
}
DEFAULT_AUGMENT = {"mask": "mask", "gender": "gender", "age": "age", "multi": "light"}
# Validation always scores against the competition's bands, whatever the training bounds.
VAL_AGE_BOUNDS = DEFAULT_AGE_BOUNDS
CHECKPOINT_VERSION = 1
LABEL_NAMES = {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": AGE_NAMES}
CROPS = ("center", "face")

# Flags a resumed run may change: they do not alter what the finished epochs computed.
RESUME_OVERRIDABLE = ("epochs", "extra_epochs", "patience", "threads", "device", "wandb")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; saved as config.json and inside every checkpoint."""

    task: str
    data: str
    model: str = ""
    epochs: int = 10
    batch_size: int = 64
    image_size: tuple[int, int] = (224, 224)
    lr: float = 1e-4
    seed: int = 0
    threads: int = 0
    torch_threads: int = 0
    name: str = ""
    pretrained: bool = True
    weights: str | None = None
    folds: int = 1
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    step_size: int = 0
    step_gamma: float = 0.1
    loss: str = "ce"
    loss_weights: tuple[float, ...] | None = None
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    class_weights: str = "none"
    task_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    oversample: str = "none"
    augment: str = ""
    age_bounds: tuple[int, int] = DEFAULT_AGE_BOUNDS
    drop_ages: tuple[tuple[int, int], ...] = ()
    corrections: str = "default"
    val_fraction: float = 0.2
    cutmix: float = 0.0
    mixup: float = 0.0
    mixup_alpha: float = 0.4
    extra_epochs: int = 0
    amp: str = "auto"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool | None = None
    patience: int = 0
    cache: bool = False
    prefetch: int = 4
    max_steps: int = 0
    limit: int = 0
    device: str = "auto"
    wandb: str | None = None
    wandb_project: str = "fastmask"
    # Framing of train and predict images: "center" crop, or the face box of `faces`
    # (None = DATA/faces.csv) grown by `face_margin` of its size on each side.
    crop: str = "center"
    face_margin: float = 0.3
    faces: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise FastmaskError(f"config has unknown fields {unknown}")
        fixed = dict(raw)
        # JSON turns tuples into lists; the frozen config keeps tuples.
        for key in ("image_size", "loss_weights", "task_weights", "age_bounds"):
            if fixed.get(key) is not None:
                fixed[key] = tuple(fixed[key])
        if "drop_ages" in fixed:
            fixed["drop_ages"] = tuple(tuple(r) for r in fixed["drop_ages"])
        return cls(**fixed)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.extra_epochs


def resolve_config(task: str, given: dict[str, Any]) -> TrainConfig:
    """A new run's config: flags given, else task defaults, else the dataclass defaults."""
    values = dict(given)
    values.setdefault("model", DEFAULT_MODELS[task])
    values.setdefault("augment", DEFAULT_AUGMENT[task])
    # Oversampling is on by default for age, the task with a tiny >= 60 band.
    values.setdefault("oversample", "balanced" if task == "age" else "none")
    config = TrainConfig(task=task, **values)
    validate_config(config)
    return config


def validate_config(c: TrainConfig) -> None:
    """Refuse inconsistent settings before any work starts."""
    from fastmask.losses import parse_loss_spec

    if c.task not in TRAIN_TASKS:
        raise FastmaskError(f"task {c.task!r}: expected one of {', '.join(TRAIN_TASKS)}")
    checks = [
        (c.epochs >= 1, f"--epochs must be >= 1, got {c.epochs}"),
        (c.batch_size >= 1, f"--batch-size must be >= 1, got {c.batch_size}"),
        (all(s >= 8 for s in c.image_size), f"--image-size must be >= 8, got {c.image_size}"),
        (c.lr > 0, f"--lr must be > 0, got {c.lr}"),
        (c.folds >= 1, f"--folds must be >= 1, got {c.folds}"),
        (c.optimizer in ("adam", "adamw", "sgd"), f"--optimizer {c.optimizer!r}"),
        (c.scheduler in ("cosine", "step", "none"), f"--scheduler {c.scheduler!r}"),
        (c.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {c.warmup_epochs}"),
        (c.oversample in ("none", "balanced"), f"--oversample {c.oversample!r}"),
        (c.amp in ("auto", "bf16", "fp16", "off"), f"--amp {c.amp!r}"),
        (0 <= c.cutmix <= 1 and 0 <= c.mixup <= 1, "--cutmix and --mixup are probabilities"),
        (c.cutmix + c.mixup <= 1, "--cutmix + --mixup must be <= 1 (one mix per batch)"),
        (c.mixup_alpha > 0, f"--mixup-alpha must be > 0, got {c.mixup_alpha}"),
        (0 < c.val_fraction < 1, f"--val-fraction must be in (0, 1), got {c.val_fraction}"),
        (c.extra_epochs >= 0 and c.patience >= 0, "--extra-epochs and --patience are >= 0"),
        (c.max_steps >= 0 and c.limit >= 0, "--max-steps and --limit are >= 0"),
        (c.threads >= 0 and c.torch_threads >= 0, "--threads and --torch-threads are >= 0"),
        (c.wandb in (None, "online", "offline", "disabled"), f"--wandb {c.wandb!r}"),
        (len(c.image_size) == 2, "--image-size takes one or two numbers (height width)"),
        (c.crop in CROPS, f"--crop {c.crop!r}: expected one of {', '.join(CROPS)}"),
        (c.face_margin >= 0, f"--face-margin must be >= 0, got {c.face_margin}"),
    ]
    for ok, message in checks:
        if not ok:
            raise FastmaskError(message)
    check_age_bounds(c.age_bounds)
    names = parse_loss_spec(c.loss)
    if c.loss_weights is not None and len(c.loss_weights) != len(names):
        raise FastmaskError(f"--loss {c.loss} needs {len(names)} --loss-weights")
    if c.class_weights not in ("none", "balanced"):
        weights = parse_floats(c.class_weights, "--class-weights")
        if c.task == "multi":
            raise FastmaskError("--class-weights for multi must be none or balanced")
        if len(weights) != NUM_CLASSES[c.task]:
            raise FastmaskError(
                f"--class-weights has {len(weights)} values, {c.task} has "
                f"{NUM_CLASSES[c.task]} classes"
            )


def parse_floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(",", " ").split()]
    except ValueError as err:
        raise FastmaskError(f"{flag} {text!r}: expected numbers like 1,2.5,4") from err


def parse_age_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """'27-29,57-59' -> ((27, 29), (57, 59)); a single age '29' is (29, 29)."""
    ranges = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError as err:
            raise FastmaskError(f"--drop-ages {text!r}: expected ranges like 27-29,57-59") from err
        if a > b:
            raise FastmaskError(f"--drop-ages range {part!r} goes backwards")
        ranges.append((a, b))
    return tuple(ranges)


# ---------------------------------------------------------------------------------------
# Distributed context
# ---------------------------------------------------------------------------------------


@dataclass
class Context:
    """Where this process runs: rank, world size and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_context(device: str) -> Context:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; start the process group when > 1."""
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FastmaskError(f"--device {device}: CUDA is not available on this machine")
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(rank, world_size, local_rank, dev)


def all_gather(obj: Any, ctx: Context) -> list[Any]:
    """Every rank's `obj`, in rank order (just [obj] without DDP)."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


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


def task_labels(frame: pd.DataFrame, task: str) -> np.ndarray:
    """The loader's label per row: the task's class, or the 18-class id for multi."""
    column = {"mask": "mask", "gender": "gender", "age": "age_band", "multi": "cls"}[task]
    return frame[column].to_numpy(dtype=np.int64)


def head_names(task: str) -> tuple[str, ...]:
    return TASKS if task == "multi" else (task,)


def split_targets(labels: Tensor, task: str) -> dict[str, Tensor]:
    """Loader labels -> {head: class index}; multi decodes the 18-class id on the device."""
    if task != "multi":
        return {task: labels}
    return {"mask": labels // 6, "gender": (labels // 3) % 2, "age": labels % 3}


def data_fingerprint(frame: pd.DataFrame) -> str:
    """Hash of every image's person, stem and labels: the data a run saw, corrections included."""
    h = hashlib.sha256()
    cols = ["person", "stem", "mask", "gender", "age"]
    for row in frame.sort_values(["person", "stem"])[cols].itertuples(index=False):
        h.update(("|".join(map(str, row)) + "\n").encode())
    return h.hexdigest()[:16]


def faces_path(c: TrainConfig, data: str | Path | None = None) -> Path:
    """The run's faces file: --faces, else faces.csv in DATA (`data` overrides the run's)."""
    if c.faces:
        return Path(c.faces)
    root = Path(data if data is not None else c.data)
    # predict may be given DATA/eval; the faces file sits beside the data index in DATA.
    if (root / "info.csv").exists() and not (root / "faces.csv").exists():
        root = root.parent
    return root / "faces.csv"


def face_crop_boxes(
    c: TrainConfig, paths: list[str], data: str | Path | None = None
) -> list[tuple[float, float, float, float] | None] | None:
    """Per path the face box grown by the margin (None: centre crop); None for --crop center."""
    if c.crop != "face":
        return None
    from fastmask.faces import expand_box, load_face_boxes

    source = faces_path(c, data)
    if not source.exists():
        raise FastmaskError(
            f"--crop face needs {source}: run `python -m fastmask faces {source.parent}` first"
        )
    boxes = load_face_boxes(source)
    # Keys are written as data.build_index/read_eval spell paths; resolve to forgive ./ or /abs.
    resolved = {os.path.realpath(k): b for k, b in boxes.items()}
    found = [boxes.get(p, resolved.get(os.path.realpath(p))) for p in paths]
    out = [None if b is None else expand_box(b, c.face_margin) for b in found]
    log.info("face crop: %d of %d images have a face box in %s", sum(b is not None for b in out),
             len(out), source)  # fmt: skip
    return out


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
        augment=c.augment,
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


# ---------------------------------------------------------------------------------------
# Model, loss, optimiser, schedule
# ---------------------------------------------------------------------------------------


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
    for task in head_names(c.task):
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


# ---------------------------------------------------------------------------------------
# Batch mixing on the device
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


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


def outputs_by_head(out: Any, task: str) -> dict[str, Tensor]:
    return dict(out) if task == "multi" else {task: out}


def train_one_epoch(rt: Runtime, loader: Loader, epoch: int, steps: int) -> dict[str, float]:
    """One pass over the loader (at most `steps` batches); returns loss, images, seconds."""
    import torch
    from tqdm.auto import tqdm

    c, ctx = rt.config, rt.ctx
    rt.model.train()
    mixer = BatchMixer(c, epoch)
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    seen = 0
    start = time.perf_counter()
    bar = tqdm(
        total=steps,
        desc=f"epoch {epoch + 1}/{c.total_epochs}",
        leave=False,
        disable=None if ctx.is_main else True,
        dynamic_ncols=True,
    )
    with bar:
        # zip stops on range first, so no batch beyond `steps` is pulled from the loader.
        for step, (images, labels) in zip(range(steps), loader, strict=False):
            lr = c.lr * rt.schedule.factor(epoch + step / steps)
            set_lr(rt.optimizer, lr)
            x = rt.prepare(images)
            targets = split_targets(labels.to(ctx.device, non_blocking=True), c.task)
            x, targets = mixer(x, targets)
            with rt.autocast():
                outputs = outputs_by_head(rt.model(x), c.task)
            loss = rt.criterion(outputs, targets)
            rt.optimizer.zero_grad(set_to_none=True)
            rt.scaler.scale(loss).backward()
            rt.scaler.step(rt.optimizer)
            rt.scaler.update()
            n = int(labels.shape[0])
            loss_sum += loss.detach().double() * n
            seen += n
            bar.update(1)
            if ctx.is_main and (step % 10 == 0 or step == steps - 1):
                rate = seen * ctx.world_size / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
    seconds = time.perf_counter() - start
    totals = torch.tensor([float(loss_sum), float(seen)], dtype=torch.float64)
    if ctx.distributed:
        import torch.distributed as dist

        totals = totals.to(ctx.device)
        dist.all_reduce(totals)
    loss_total, images_total = (float(v) for v in totals.cpu())
    return {
        "train_loss": loss_total / max(images_total, 1.0),
        "train_samples": images_total,
        "train_seconds": seconds,
        "lr": c.lr * rt.schedule.factor(epoch + 1),
    }


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


def evaluate(rt: Runtime, val: pd.DataFrame, loader: Loader | None) -> Evaluation:
    """Score the model on the validation rows (30/60 labels); ranks share the rows."""
    import torch

    from fastmask.metrics import accuracy, macro_f1, per_class_f1

    c, ctx = rt.config, rt.ctx
    start = time.perf_counter()
    heads = head_names(c.task)
    rows = val_rows(val, ctx)
    probs: dict[str, list[np.ndarray]] = {t: [] for t in heads}
    loss_sum = 0.0
    if ctx.distributed:
        import torch.distributed as dist

        # BatchNorm statistics drift apart per rank; all ranks score with rank 0's.
        for buffer in rt.raw_model.buffers():
            dist.broadcast(buffer, 0)
    rt.eval_model.eval()
    if loader is not None:
        with torch.no_grad():
            for images, batch_labels in loader:
                x = rt.prepare(images)
                targets = split_targets(batch_labels.to(ctx.device), c.task)
                with rt.autocast():
                    outputs = outputs_by_head(rt.eval_model(x), c.task)
                loss_sum += float(rt.criterion(outputs, targets)) * int(batch_labels.shape[0])
                for t in heads:
                    probs[t].append(torch.softmax(outputs[t].float(), dim=1).cpu().numpy())
    local = {t: np.concatenate(v) if v else np.zeros((0, NUM_CLASSES[t])) for t, v in probs.items()}
    gathered = all_gather((rows, local, loss_sum), ctx)
    order = np.concatenate([g[0] for g in gathered])
    inverse = np.argsort(order)
    merged = {t: np.concatenate([g[1][t] for g in gathered])[inverse] for t in heads}
    loss = sum(g[2] for g in gathered) / max(len(val), 1)
    truth = {t: task_labels(val, t) for t in heads}
    result = Evaluation(loss, merged, truth, 0.0, 0.0, np.zeros(0))
    n_classes = NUM_CLASSES["class" if c.task == "multi" else c.task]
    result.macro_f1 = macro_f1(result.true, result.pred, n_classes)
    result.accuracy = accuracy(result.true, result.pred)
    result.per_class_f1 = per_class_f1(result.true, result.pred, n_classes)
    if c.task == "multi":
        result.task_f1 = {
            t: macro_f1(truth[t], merged[t].argmax(axis=1), NUM_CLASSES[t]) for t in heads
        }
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------
# Files: checkpoints, metrics, predictions, summary
# ---------------------------------------------------------------------------------------


def class_labels(task: str) -> list[str]:
    return class_names() if task == "multi" else list(LABEL_NAMES[task])


def label_maps(task: str) -> dict[str, list[str]]:
    maps = {t: list(LABEL_NAMES[t]) for t in head_names(task)}
    if task == "multi":
        maps["class"] = class_names()
    return maps


def save_checkpoint(path: Path, payload: dict[str, Any], also: Path | None = None) -> None:
    """torch.save to a temp file, then rename: a kill never leaves half a checkpoint.

    `also` gets the same checkpoint through a hard link (a copy where links fail), so
    best.pt and last.pt of one epoch cost one write.
    """
    import shutil

    import torch

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp_also = None if also is None else also.with_name(f".{also.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        if also is not None and tmp_also is not None:
            tmp_also.unlink(missing_ok=True)
            try:
                os.link(tmp, tmp_also)
            except OSError:
                shutil.copyfile(tmp, tmp_also)
            os.replace(tmp_also, also)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if tmp_also is not None:
            tmp_also.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise FastmaskError(f"cannot read checkpoint {path}: {err}") from err
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


# ---------------------------------------------------------------------------------------
# Tracking (wandb, lazily)
# ---------------------------------------------------------------------------------------


def wandb_mode(requested: str | None) -> str:
    """--wandb, else WANDB_MODE, else online with an API key and offline without."""
    mode = requested or os.environ.get("WANDB_MODE") or ""
    if mode in ("online", "offline", "disabled"):
        if mode == "online" and not os.environ.get("WANDB_API_KEY"):
            try:
                import wandb

                logged_in = bool(wandb.api.api_key)
            except Exception:  # noqa: BLE001 - no wandb or no login: offline it is
                logged_in = False
            if not logged_in:
                log.warning("wandb online needs WANDB_API_KEY or `wandb login`; logging offline")
                return "offline"
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class Tracker:
    """wandb run when available and enabled; every method is a no-op otherwise."""

    def __init__(self, c: TrainConfig, run_dir: Path, enabled: bool) -> None:
        self.run: Any = None
        mode = wandb_mode(c.wandb)
        if not enabled or mode == "disabled":
            return
        try:
            import wandb
        except ImportError:
            log.warning("wandb is not installed (pip install wandb); metrics go to local files")
            return
        try:
            self.run = wandb.init(
                project=c.wandb_project,
                name=f"{c.task}/{run_dir.name}",
                dir=str(run_dir),
                config=c.to_json(),
                mode=mode,
                reinit=True,
            )
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            log.warning("wandb could not start (%s); metrics go to local files", err)

    def log(self, row: dict[str, Any], image: Path | None = None) -> None:
        if self.run is None:
            return
        import wandb

        data = {k: v for k, v in row.items() if isinstance(v, int | float)}
        if image is not None and image.exists():
            data["confusion"] = wandb.Image(str(image))
        self.run.log(data, step=int(row["epoch"]))

    def finish(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        for key in ("best_epoch", "best_macro_f1", "images_per_s", "wall_s"):
            self.run.summary[key] = summary.get(key)
        self.run.finish()


# ---------------------------------------------------------------------------------------
# One run on one split
# ---------------------------------------------------------------------------------------


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


def build_runtime(c: TrainConfig, ctx: Context, train_labels: np.ndarray) -> Runtime:
    import torch

    from fastmask.models import build_model

    torch.manual_seed(c.seed)  # the initial weights depend on the seed only
    raw = build_model(c.model, c.task, pretrained=c.pretrained, weights=c.weights).to(ctx.device)
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
    )


def train_split(
    c: TrainConfig, ctx: Context, split: Split, run_dir: Path, fingerprint: str
) -> dict[str, Any]:
    """Train on one split, writing the run folder; resumes from run_dir/last.pt if present."""
    import torch

    started = time.perf_counter()
    train_labels = task_labels(split.train, c.task)
    rt = build_runtime(c, ctx, train_labels)
    state: dict[str, Any] = {
        "next_epoch": 0,
        "history": [],
        "best_epoch": 0,
        "best_macro_f1": -1.0,
        "best": {},
        "bad_epochs": 0,
        "stopped_early": False,
        "wall_s": 0.0,
        "samples_per_epoch": {},
    }
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if last_path.exists():
        ckpt = load_checkpoint(last_path)
        rt.raw_model.load_state_dict(ckpt["model"])
        rt.optimizer.load_state_dict(ckpt["optimizer"])
        rt.scaler.load_state_dict(ckpt["scaler"])
        state.update(ckpt["state"])
        log.info("resuming %s after epoch %d", run_dir, state["next_epoch"])
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", c.to_json())
    tracker = Tracker(c, run_dir, enabled=ctx.is_main)
    loaders: dict[str, Loader] = {}
    val_loader = make_val_loader(c, split.val, ctx) if c.epochs > state["next_epoch"] else None
    try:
        for epoch in range(state["next_epoch"], c.total_epochs):
            extra = epoch >= c.epochs
            if not extra and state["stopped_early"]:
                continue
            phase = "train+val" if extra else "train"
            if phase not in loaders:
                rows = split.train
                if extra:
                    import pandas as pd

                    rows = training_rows(pd.concat([split.train, split.val]), c)
                loaders[phase] = make_loader(c, rows, task_labels(rows, c.task), ctx, train=True)
                # Samples of one epoch over all ranks, after oversampling and sharding.
                spe = loaders[phase].samples_per_epoch * ctx.world_size
                state["samples_per_epoch"][phase] = spe
            loader = loaders[phase]
            torch.manual_seed(epoch_seed(c.seed, epoch))
            loader.set_epoch(epoch)
            steps = min(len(loader), c.max_steps) if c.max_steps else len(loader)
            if steps == 0:
                raise FastmaskError(
                    f"no training batch: {loader.samples_per_epoch} samples per rank with "
                    f"--batch-size {c.batch_size}; lower the batch size"
                )
            epoch_start = time.perf_counter()
            stats = train_one_epoch(rt, loader, epoch, steps)
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "phase": phase,
                **stats,
                "images_per_s": stats["train_samples"] / max(stats["train_seconds"], 1e-9),
            }
            improved = False
            result = None
            if not extra:
                result = evaluate(rt, split.val, val_loader)
                row.update(
                    val_loss=result.loss, val_macro_f1=result.macro_f1, val_acc=result.accuracy
                )
                row.update({f"val_f1_{t}": f for t, f in result.task_f1.items()})
                improved = result.macro_f1 > state["best_macro_f1"]
                if improved:
                    state["best_epoch"], state["best_macro_f1"] = epoch + 1, result.macro_f1
                    state["best"] = best_record(result, c.task)
                    state["bad_epochs"] = 0
                else:
                    state["bad_epochs"] += 1
                if c.patience and state["bad_epochs"] >= c.patience:
                    state["stopped_early"] = True
                    log.info("early stop: no better macro F1 for %d epochs", c.patience)
            row["seconds"] = time.perf_counter() - epoch_start
            state["history"].append(row)
            state["next_epoch"] = epoch + 1
            state["wall_s"] += time.perf_counter() - started
            started = time.perf_counter()
            if ctx.is_main:
                log_epoch(row, state, c)
                payload = checkpoint_payload(rt, state, epoch + 1)
                if improved and result is not None:
                    write_predictions(run_dir / "val_predictions.csv", split.val, result, c.task)
                    plot_run_confusion(run_dir, result, c.task, epoch + 1)
                save_checkpoint(last_path, payload, also=best_path if improved else None)
                write_metrics(run_dir / "metrics.csv", state["history"], c.task)
                summary = make_summary(c, ctx, split, state, fingerprint)
                write_json(run_dir / "summary.json", summary)
                tracker.log(row, run_dir / "confusion.png" if improved else None)
    finally:
        for open_loader in [*loaders.values(), val_loader]:
            if open_loader is not None:
                open_loader.close()
    summary = make_summary(c, ctx, split, state, fingerprint, finished=True)
    if ctx.is_main:
        # Also repairs metrics.csv when a kill fell between the last checkpoint and its write.
        write_metrics(run_dir / "metrics.csv", state["history"], c.task)
        write_json(run_dir / "summary.json", summary)
        tracker.finish(summary)
    return summary


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
    }


def log_epoch(row: dict[str, Any], state: dict[str, Any], c: TrainConfig) -> None:
    val = ""
    if row.get("val_macro_f1") is not None:
        val = (
            f" val_loss {row['val_loss']:.4f} val_f1 {row['val_macro_f1']:.4f} "
            f"(best {state['best_macro_f1']:.4f} @{state['best_epoch']}) "
            f"acc {row['val_acc']:.4f}"
        )
        if c.task == "multi":
            val += " " + " ".join(f"{t} {row[f'val_f1_{t}']:.3f}" for t in TASKS)
    log.info(
        "epoch %d/%d %s train_loss %.4f%s lr %.2e %.0f img/s %.1f s",
        row["epoch"],
        c.total_epochs,
        row["phase"],
        row["train_loss"],
        val,
        row["lr"],
        row["images_per_s"],
        row["seconds"],
    )


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
        "world_size": ctx.world_size,
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


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------


def default_run_dir(c: TrainConfig) -> Path:
    name = c.name or f"{c.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path("runs") / c.task / name


def train(c: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Train `c` into run_dir (one split, or fold0..fold{K-1}); resumes what is there."""
    ctx = setup_context(c.device)
    deterministic = c.deterministic if c.deterministic is not None else ctx.device.type == "cpu"
    try:
        with determinism(deterministic, c.torch_threads):
            frame = load_frame(c)
            fingerprint = data_fingerprint(frame)
            splits = make_splits(frame, c)
            if len(splits) == 1:
                return train_split(c, ctx, splits[0], run_dir, fingerprint)
            results = []
            for i, split in enumerate(splits):
                fold_dir = run_dir / f"fold{i}"
                done = fold_dir / "summary.json"
                if done.exists() and json.loads(done.read_text()).get("finished"):
                    results.append(json.loads(done.read_text()))
                    continue
                log.info("fold %d/%d", i + 1, len(splits))
                results.append(train_split(c, ctx, split, fold_dir, fingerprint))
            f1 = [r["best_macro_f1"] for r in results]
            summary = {
                "task": c.task,
                "model": c.model,
                "folds": len(splits),
                "fold_best_macro_f1": f1,
                "best_macro_f1": float(np.mean(f1)),
                "mean_macro_f1": float(np.mean(f1)),
                "std_macro_f1": float(np.std(f1)),
                "wall_s": round(sum(r["wall_s"] for r in results), 3),
                "images_per_s": round(float(np.mean([r["images_per_s"] for r in results])), 2),
                "data_fingerprint": fingerprint,
            }
            if ctx.is_main:
                write_json(run_dir / "config.json", c.to_json())
                write_json(run_dir / "summary.json", summary)
            log.info(
                "folds: macro F1 %.4f ± %.4f", summary["mean_macro_f1"], summary["std_macro_f1"]
            )
            return summary
    finally:
        if ctx.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


def config_for_args(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    """The run's config and folder: a new one from flags, or the resumed run's own."""
    skip = {"command", "func", "verbose", "task", "resume", "out", "drop_ages", "no_corrections"}
    given = {k: v for k, v in vars(args).items() if v is not None and k not in skip}
    if args.drop_ages is not None:
        given["drop_ages"] = parse_age_ranges(args.drop_ages)
    if args.no_corrections:
        given["corrections"] = "none"
    for key in ("image_size",):
        if key in given and len(given[key]) == 1:
            given[key] = (given[key][0], given[key][0])
    for key in ("image_size", "age_bounds", "loss_weights", "task_weights"):
        if key in given:
            given[key] = tuple(given[key])
    if args.resume is None:
        if "data" not in given:
            raise FastmaskError("--data DATA is required (or --resume RUN)")
        config = resolve_config(args.task, given)
        return config, Path(args.out) if args.out else default_run_dir(config)
    run_dir = Path(args.resume)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FastmaskError(f"--resume {run_dir}: no config.json there (not a run folder?)")
    config = TrainConfig.from_json(json.loads(config_path.read_text()))
    if config.task != args.task:
        raise FastmaskError(f"--resume {run_dir} is a {config.task} run, not {args.task}")
    changes = {k: v for k, v in given.items() if getattr(config, k) != v}
    refused = sorted(k for k in changes if k not in RESUME_OVERRIDABLE)
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)
        raise FastmaskError(
            f"{flags} differ from the config of {run_dir}; a resumed run keeps its settings "
            f"(only {', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDABLE)} may change)"
        )
    if "epochs" in changes or "extra_epochs" in changes:
        log.warning("changing the number of epochs on resume changes the lr schedule from here on")
    config = dataclasses.replace(config, **changes)
    validate_config(config)
    return config, run_dir


def run_command(args: argparse.Namespace) -> int:
    config, run_dir = config_for_args(args)
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        summary = train(config, run_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        log.info(
            "done: best macro F1 %.4f (epoch %s) in %s; %.0f img/s",
            summary["best_macro_f1"],
            summary.get("best_epoch", "-"),
            run_dir,
            summary["images_per_s"],
        )
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a mask / gender / age model, or one model with three heads (multi)",
        description=(
            "Train on a person-level split (or --folds K) and write a run folder with "
            "config.json, metrics.csv, summary.json, best.pt, last.pt and confusion.png. "
            "Validation macro F1 always uses age bands 30/60."
        ),
    )
    p.add_argument("task", choices=TRAIN_TASKS)
    # Every default is None here: None means "not given", so --resume can tell overrides apart.
    g = p.add_argument_group("run")
    g.add_argument("--data", help="data set folder (holding train/ and eval/)")
    g.add_argument("--out", help="run folder (default runs/<task>/<name>)")
    g.add_argument("--name", help="run name under runs/<task>/ (default <model>-<time>)")
    g.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    g.add_argument("--epochs", type=int, help="epochs on the training split (default 10)")
    g.add_argument("--extra-epochs", type=int, help="then N epochs on train+validation")
    g.add_argument("--patience", type=int, help="early stop after N epochs without better F1")
    g.add_argument("--folds", type=int, help="K person-level folds into RUN/fold{i}/")
    g.add_argument("--val-fraction", type=float, help="validation people (default 0.2)")
    g.add_argument("--seed", type=int, help="seed of split, init, sampling (default 0)")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    g.add_argument("--wandb", choices=("online", "offline", "disabled"), help="tracking mode")
    g.add_argument("--wandb-project", help="wandb project (default fastmask)")
    g.add_argument("--max-steps", type=int, help="at most N training batches per epoch")
    g.add_argument("--limit", type=int, help="use only N people (quick trials, tests)")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="torchvision model (default by task)")
    g.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=None)
    g.add_argument("--weights", metavar="PATH", help="local state dict or checkpoint to start")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, help="per process (default 64)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 1e-4)")
    g.add_argument("--optimizer", choices=("adam", "adamw", "sgd"))
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--scheduler", choices=("cosine", "step", "none"))
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up (default 1)")
    g.add_argument("--step-size", type=int, help="step schedule: epochs per decay")
    g.add_argument("--step-gamma", type=float, help="step schedule: decay factor (0.1)")
    g.add_argument("--loss", help="ce, focal, f1 or two joined by + (e.g. ce+f1)")
    g.add_argument("--loss-weights", type=float, nargs="+", help="weights of the two losses")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--focal-gamma", type=float)
    g.add_argument("--class-weights", help="none, balanced, or one weight per class: 1,2,4")
    g.add_argument("--task-weights", type=float, nargs=3, help="multi: mask gender age weights")
    g = p.add_argument_group("data")
    g.add_argument("--image-size", type=int, nargs="+", help="SIZE or HEIGHT WIDTH (224)")
    g.add_argument("--threads", type=int, help="loader threads (default: all cores)")
    g.add_argument(
        "--torch-threads",
        type=int,
        help="torch CPU threads (default: torch's); on a busy CPU 1 avoids threads spinning",
    )
    g.add_argument("--prefetch", type=int, help="batches decoded ahead (default 4)")
    g.add_argument("--cache", action="store_true", default=None, help="keep decoded images")
    g.add_argument("--augment", choices=("none", "light", "mask", "gender", "age"))
    g.add_argument("--crop", choices=CROPS, help="center (default) or face: crop to face boxes")
    g.add_argument("--face-margin", type=float, help="face box grown by this fraction (0.3)")
    g.add_argument("--faces", metavar="FILE", help="face boxes CSV (default DATA/faces.csv)")
    g.add_argument("--oversample", choices=("none", "balanced"), help="balanced default for age")
    g.add_argument("--age-bounds", type=int, nargs=2, help="training age bands (default 30 60)")
    g.add_argument("--drop-ages", help="drop training ages, e.g. 27-29,57-59")
    g.add_argument("--corrections", metavar="PATH", help="label corrections CSV")
    g.add_argument("--no-corrections", action="store_true", help="use the labels as written")
    g.add_argument("--cutmix", type=float, help="probability of left/right-half CutMix")
    g.add_argument("--mixup", type=float, help="probability of mixup")
    g.add_argument("--mixup-alpha", type=float, help="mixup Beta(alpha, alpha) (0.4)")
    g = p.add_argument_group("speed")
    g.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), help="auto: bf16 on GPU")
    g.add_argument("--channels-last", action="store_true", default=None)
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile")
    g.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="deterministic kernels (default: on for CPU, off for CUDA)",
    )
    p.set_defaults(func=run_command)
