"""The run's settings: `TrainConfig`, its task defaults and its checks.

A frozen dataclass holds every setting of a run; `config.json` and every checkpoint keep it.
Nothing here imports torch, so predict, export and classify can read a run's config cheaply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fastmask.data import check_age_bounds
from fastmask.errors import FastmaskError
from fastmask.schema import DEFAULT_AGE_BOUNDS, NUM_CLASSES, TRAIN_TASKS

DEFAULT_MODELS = {
    "mask": "efficientnet_b0",
    "gender": "efficientnet_b3",
    "age": "resnet152",
    "multi": "efficientnet_b0",
}
DEFAULT_AUGMENT = {"mask": "mask", "gender": "gender", "age": "age", "multi": "light"}
# Validation always scores against the competition's bands, whatever the training bounds.
VAL_AGE_BOUNDS = DEFAULT_AGE_BOUNDS


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
