"""The run's settings: `TrainConfig`, its task defaults and its checks.

A frozen dataclass holds every setting of a run; `config.json` and every checkpoint keep it.
Nothing here imports torch, so predict, export and classify can read a run's config cheaply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastmask import _native
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
# The largest image side the native loader takes.
MAX_IMAGE_SIZE = 8192


# center: the centre crop; face: the face box of faces.csv; face-aligned: that box turned so
# the eyes (faces.csv landmarks) are level.
CROPS = ("center", "face", "face-aligned")

LOSS_NAMES = ("ce", "focal", "f1")
# Flags a resumed run may change: they do not alter what the finished epochs computed.
# `data` may change when the data folder moved (the run checks it is the same data).
RESUME_OVERRIDABLE = (
    "epochs", "extra_epochs", "patience", "threads", "prefetch", "device", "wandb",
    "wandb_project", "data",
    # The starting weights: a resume never reads them (last.pt holds the weights), and
    # runs from before --weights was kept absolute recorded it as typed.
    "weights", "pretrained",
)  # fmt: skip


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
    # (None = DATA/faces.csv) grown by `face_margin` of its size on each side ("face"), turned
    # about its centre so the eyes are level ("face-aligned").
    crop: str = "center"
    face_margin: float = 0.3
    faces: str | None = None
    # Centre crop as (width, height) fractions of the image (None: the preset's 1.0 x 0.75):
    # tighter framing gives the face more pixels where faces sit near the centre.
    center_crop: tuple[float, float] | None = None
    # Weight EMA (timm's ModelEmaV2): 0 is off; validated, selected and saved beside the raw.
    ema_decay: float = 0.0
    # Gradient accumulation: one optimiser step per N batches (effective batch N x size).
    accum_steps: int = 1
    # Leave out images that fail the header check (listed in excluded.csv) instead of failing.
    lenient: bool = False

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
        for key in ("image_size", "loss_weights", "task_weights", "age_bounds", "center_crop"):
            if fixed.get(key) is not None:
                fixed[key] = tuple(fixed[key])
        if "drop_ages" in fixed:
            fixed["drop_ages"] = tuple(tuple(r) for r in fixed["drop_ages"])
        return cls(**fixed)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.extra_epochs


def resolve_config(task: str, given: dict[str, Any], check_model: bool = True) -> TrainConfig:
    """A new run's config: flags given, else task defaults, else the dataclass defaults."""
    values = dict(given)
    values.setdefault("model", DEFAULT_MODELS[task])
    values.setdefault("augment", DEFAULT_AUGMENT[task])
    # Oversampling is on by default for age, the task with a tiny >= 60 band.
    values.setdefault("oversample", "balanced" if task == "age" else "none")
    config = TrainConfig(task=task, **values)
    validate_config(config, check_model)
    return config


def validate_config(c: TrainConfig, check_model: bool = True) -> None:
    """Refuse inconsistent settings before any work starts (the model name needs
    torchvision imported: `check_model=False` leaves it to `check_model_name`)."""
    if c.task not in TRAIN_TASKS:
        raise FastmaskError(f"task {c.task!r}: expected one of {', '.join(TRAIN_TASKS)}")
    checks = [
        (c.epochs >= 1, f"--epochs must be >= 1, got {c.epochs}"),
        (c.batch_size >= 1, f"--batch-size must be >= 1, got {c.batch_size}"),
        (all(s >= 8 for s in c.image_size), f"--image-size must be >= 8, got {c.image_size}"),
        # The loader's limit (rust/): beyond it the loader raised a traceback mid-setup.
        (
            all(s <= MAX_IMAGE_SIZE for s in c.image_size),
            f"--image-size must be <= {MAX_IMAGE_SIZE}, got {c.image_size}",
        ),
        (c.prefetch >= 1, f"--prefetch must be >= 1, got {c.prefetch}"),
        (c.weight_decay >= 0, f"--weight-decay must be >= 0, got {c.weight_decay}"),
        (c.momentum >= 0, f"--momentum must be >= 0, got {c.momentum}"),
        (all(w >= 0 for w in c.task_weights), f"--task-weights must be >= 0, got {c.task_weights}"),
        (c.lr > 0, f"--lr must be > 0, got {c.lr}"),
        (c.folds >= 1, f"--folds must be >= 1, got {c.folds}"),
        # numpy's generators (the person splits) take no negative seed.
        (c.seed >= 0, f"--seed must be >= 0, got {c.seed}"),
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
        (
            c.augment in ("", *_native.PRESETS),
            f"--augment {c.augment!r}: expected one of {', '.join(_native.PRESETS)}",
        ),
        (c.face_margin >= 0, f"--face-margin must be >= 0, got {c.face_margin}"),
        (0 <= c.ema_decay < 1, f"--ema-decay must be in [0, 1), got {c.ema_decay}"),
        (c.accum_steps >= 1, f"--accum-steps must be >= 1, got {c.accum_steps}"),
        (
            c.center_crop is None or all(0 < f <= 1 for f in c.center_crop),
            f"--center-crop takes two fractions in (0, 1], got {c.center_crop}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise FastmaskError(message)
    check_age_bounds(c.age_bounds)
    if check_model:
        check_model_name(c.model)
    names = parse_loss_spec(c.loss)
    if c.loss_weights is not None and len(c.loss_weights) != len(names):
        raise FastmaskError(f"--loss {c.loss} needs {len(names)} --loss-weights")
    if c.class_weights not in ("none", "balanced"):
        weights = parse_floats(c.class_weights, "--class-weights")
        if not any(w > 0 for w in weights):
            raise FastmaskError(
                f"--class-weights {c.class_weights}: at least one must be > 0 (all 0 is no loss)"
            )
        if c.task == "multi":
            raise FastmaskError("--class-weights for multi must be none or balanced")
        if len(weights) != NUM_CLASSES[c.task]:
            raise FastmaskError(
                f"--class-weights has {len(weights)} values, {c.task} has "
                f"{NUM_CLASSES[c.task]} classes"
            )


def check_model_name(name: str) -> None:
    """Refuse a model torchvision cannot build, naming the nearest one it can."""
    from fastmask.models import available_models

    models = available_models()
    if name and name not in models:
        raise FastmaskError(unknown_key_message(name, models, "--model").replace("key", "model"))


def parse_loss_spec(spec: str) -> list[str]:
    """'ce', 'focal', 'f1' or a pair like 'ce+f1' -> list of names."""
    names = [s.strip().lower() for s in spec.split("+") if s.strip()]
    bad = [n for n in names if n not in LOSS_NAMES]
    if not names or bad or len(names) > 2:
        raise FastmaskError(
            f"loss {spec!r}: expected one of {', '.join(LOSS_NAMES)} or two joined by '+' "
            "(e.g. ce+f1)"
        )
    return names


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


# ---- Settings from a file (--config FILE.toml, recipes) or `--set key=value` -------------

# Tuple-valued fields and how many numbers each takes (None: any number).
_TUPLE_FIELDS: dict[str, tuple[type, int | None]] = {
    "image_size": (int, 2),
    "age_bounds": (int, 2),
    "loss_weights": (float, None),
    "task_weights": (float, 3),
    "center_crop": (float, 2),
}
# String fields without a string default: optional ones (None) and `data` (required).
_STRING_FIELDS = ("weights", "wandb", "faces", "data")
# Keys only the command line has: a file spells them as the setting they stand for.
_NOT_SETTINGS = ("task",)


def setting_names() -> list[str]:
    """Every key a config file, a recipe or `--set` may give (TrainConfig's fields)."""
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name not in _NOT_SETTINGS]


def unknown_key_message(key: str, valid: list[str], where: str) -> str:
    """'unknown key' naming the nearest valid one, as a user mistyping a setting needs."""
    import difflib

    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(valid)}"
    return f"{where}: unknown key {key!r}{hint}"


def _coerce(name: str, value: Any, where: str) -> Any:
    """One setting from TOML / --set into the type TrainConfig holds; refuses the wrong type."""

    def bad(expected: str) -> FastmaskError:
        return FastmaskError(f"{where}: {name} = {value!r}: expected {expected}")

    default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)
    if name == "image_size" and isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if name == "drop_ages":
        if isinstance(value, str):
            return parse_age_ranges(value)
        if isinstance(value, list) and all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(a, int) for a in r)
            for r in value
        ):
            return tuple((int(a), int(b)) for a, b in value)
        raise bad('ranges like "27-29,57-59" or [[27, 29], [57, 59]]')
    if name == "class_weights" and isinstance(value, list):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise bad("none, balanced or a list of numbers")
        return ",".join(str(float(v)) for v in value)
    if name in _TUPLE_FIELDS:
        kind, count = _TUPLE_FIELDS[name]
        ok = isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )
        if not ok or (count is not None and len(value) != count) or not value:
            raise bad(f"a list of {count or 'some'} numbers")
        if kind is int and not all(float(v).is_integer() for v in value):
            raise bad(f"a list of {count} whole numbers")
        return tuple(kind(v) for v in value)
    if isinstance(default, bool) or name == "deterministic":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if isinstance(default, str) or name in _STRING_FIELDS:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    raise bad("a value of a known type")  # pragma: no cover - every field is covered above


def config_values(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Settings from a file or `--set` (flag names, with '-' or '_') -> TrainConfig values.

    `no_pretrained` and `no_corrections` are accepted as the flags spell them. Unknown keys
    and wrong types are refused naming the key, the nearest valid one and `where`.
    """
    valid = setting_names()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name == "no_pretrained":
            name, value = "pretrained", not _coerce("cache", value, where)
        elif name == "no_corrections":
            flag = _coerce("cache", value, where)
            name, value = "corrections", "none" if flag else "default"
        if name not in valid:
            raise FastmaskError(unknown_key_message(key, valid + ["no_pretrained"], where))
        out[name] = _coerce(name, value, where)
    return out


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs; the value is read as TOML (3, 1e-4, true, [96, 96], "x"),
    and a bare word that is not TOML is a string (`--set model=resnet18`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise FastmaskError(f"--set {item!r}: expected key=value")
        out[key.strip()] = parse_toml_value(text.strip())
    return out


def parse_toml_value(text: str) -> Any:
    toml = load_toml_module()
    try:
        return toml.loads(f"v = {text}")["v"]
    except toml.TOMLDecodeError:
        return text


def load_toml_module() -> Any:
    """tomllib (Python 3.11+) or its backport tomli, which has the same API."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a syntax error names the file and line."""
    toml = load_toml_module()
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise FastmaskError(f"cannot read {p}: {err.strerror or err}") from err
    try:
        return dict(toml.loads(text))
    except toml.TOMLDecodeError as err:
        raise FastmaskError(f"{p}: TOML syntax error: {err}") from err
