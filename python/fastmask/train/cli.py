"""`python -m fastmask train {mask,gender,age,multi} --data DATA [options]`: the entry point.

Flags become a `TrainConfig` (or `--resume RUN` reloads one); the loop is imported only
when a run starts, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import time
from pathlib import Path
from typing import Any

from fastmask import _native
from fastmask.errors import FastmaskError, Interrupted
from fastmask.train.config import (
    CROPS,
    RESUME_OVERRIDABLE,
    TRAIN_TASKS,
    TrainConfig,
    config_values,
    parse_age_ranges,
    parse_set,
    read_toml,
    resolve_config,
    validate_config,
)

log = logging.getLogger(__name__)


def default_run_dir(c: TrainConfig) -> Path:
    name = c.name or f"{c.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path("runs") / c.task / name


def config_for_args(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    """The run's config and folder: a new one from flags, or the resumed run's own."""
    skip = {"command", "func", "verbose", "task", "resume", "out", "drop_ages", "no_corrections"}
    skip |= {"config", "set"}
    # A config file, then --set, then flags: each later source wins over the earlier ones.
    given: dict[str, Any] = {}
    if args.config is not None:
        given.update(config_values(read_toml(args.config), str(args.config)))
    given.update(config_values(parse_set(args.set), "--set"))
    given.update({k: v for k, v in vars(args).items() if v is not None and k not in skip})
    if args.drop_ages is not None:
        given["drop_ages"] = parse_age_ranges(args.drop_ages)
    if args.no_corrections:
        if args.corrections is not None:
            raise FastmaskError(
                f"--corrections {args.corrections} and --no-corrections contradict each other: "
                "pass one of them"
            )
        given["corrections"] = "none"
    for key in ("image_size",):
        if key in given and len(given[key]) == 1:
            given[key] = (given[key][0], given[key][0])
    for key in ("image_size", "age_bounds", "loss_weights", "task_weights", "center_crop"):
        if key in given:
            given[key] = tuple(given[key])
    for key in ("data", "faces", "weights", "corrections"):  # absolute: --resume, predict
        if given.get(key) and given[key] not in ("default", "none"):  # and suspects anywhere
            given[key] = os.path.abspath(given[key])
    if args.resume is None:
        if "data" not in given:
            raise FastmaskError("--data DATA is required (or --resume RUN)")
        config = resolve_config(args.task, given)
        run_dir = Path(args.out) if args.out else default_run_dir(config)
        check_continues(run_dir, config, args.task)
        return config, run_dir
    run_dir = Path(args.resume)
    if args.out is not None and Path(args.out).resolve() != run_dir.resolve():
        raise FastmaskError(
            f"--resume {run_dir} --out {args.out}: a resumed run continues in {run_dir}; "
            "drop --out (or train a new run into it without --resume)"
        )
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FastmaskError(f"--resume {run_dir}: no config.json there (not a run folder?)")
    config = TrainConfig.from_json(json.loads(config_path.read_text()))
    if config.task != args.task:
        raise FastmaskError(f"--resume {run_dir} is a {config.task} run, not {args.task}")
    changes = {k: v for k, v in given.items() if getattr(config, k) != v}
    refused = refused_flags(changes)
    if refused:
        raise FastmaskError(
            f"{refused} differ from the config of {run_dir}; a resumed run keeps its settings "
            f"(only {', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDABLE)} may change)"
        )
    if "epochs" in changes or "extra_epochs" in changes:
        log.warning("changing the number of epochs on resume changes the lr schedule from here on")
    config = dataclasses.replace(config, **changes)
    if not os.path.isdir(config.data):
        raise FastmaskError(
            f"the data folder {config.data} named in {config_path} does not exist; if it moved, "
            f"pass its new place: --resume {run_dir} --data NEW_PLACE"
        )
    validate_config(config)
    return config, run_dir


def refused_flags(changes: dict[str, Any]) -> str:
    """The flags of `changes` a continued run may not change, e.g. "--lr, --model" ("" if none)."""
    return ", ".join(
        "--" + k.replace("_", "-") for k in sorted(changes) if k not in RESUME_OVERRIDABLE
    )


def check_continues(run_dir: Path, config: TrainConfig, task: str) -> None:
    """A new run whose folder already holds a checkpoint continues it (the loop resumes from
    last.pt), so it must be the same run: the same task and settings, as --resume requires."""
    config_path = run_dir / "config.json"
    resumable = (run_dir / "last.pt").exists() or any(run_dir.glob("fold*/last.pt"))
    if not resumable or not config_path.exists():
        return
    try:
        saved = TrainConfig.from_json(json.loads(config_path.read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise FastmaskError(
            f"{config_path}: cannot read the config of the run there: {err}"
        ) from err
    again = f"continue it with --resume {run_dir}, or pass another --out"
    if saved.task != task:
        raise FastmaskError(f"{run_dir} holds a {saved.task} run, not {task}: {again}")
    changes = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if getattr(config, f.name) != getattr(saved, f.name)
    }
    refused = refused_flags(changes)
    if refused:
        raise FastmaskError(
            f"{refused} differ from the config of the run in {run_dir}, which train would "
            f"continue from its last.pt: {again}"
        )


def run_command(args: argparse.Namespace) -> int:
    from fastmask.loader import warn_if_unoptimized

    warn_if_unoptimized()  # before the splits and the model: a slow build wastes the whole run
    config, run_dir = config_for_args(args)
    from tqdm.contrib.logging import logging_redirect_tqdm

    from fastmask.train.loop import train

    try:
        with logging_redirect_tqdm():
            summary = train(config, run_dir)
    except Interrupted as err:
        err.command = shlex.join(
            ["python", "-m", "fastmask", "train", config.task, "--resume", str(run_dir)]
        )
        raise
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
    g.add_argument(
        "--config",
        metavar="FILE.toml",
        help="settings from a TOML file, keys named as the flags (batch_size = 32); flags win",
    )
    g.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        help="one setting, e.g. --set epochs=3 --set image_size=[96,96]; flags win",
    )
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
    g.add_argument(
        "--lenient",
        action="store_true",
        default=None,
        help="leave out images that fail the header check (excluded.csv) instead of stopping",
    )
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
    g.add_argument("--ema-decay", type=float, help="weight EMA, e.g. 0.999 (default 0: off)")
    g.add_argument("--accum-steps", type=int, help="gradient accumulation: batches per step (1)")
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
    g.add_argument("--augment", choices=_native.PRESETS, help="augmentation preset (by task)")
    g.add_argument(
        "--center-crop",
        type=float,
        nargs=2,
        metavar=("W", "H"),
        help="centre crop as fractions of width and height (default 1.0 0.75)",
    )
    g.add_argument(
        "--crop",
        choices=CROPS,
        help="center (default); face: crop to face boxes; face-aligned: turned so eyes are level",
    )
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
