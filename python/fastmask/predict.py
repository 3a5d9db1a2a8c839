"""`python -m fastmask predict`: class probabilities for every row of eval/info.csv.

files -> data index -> native loader -> trainer -> **predictions** -> combine -> CSV

Each checkpoint runs through the native loader in eval mode with the crop it was trained
with; optional horizontal-flip TTA; several checkpoints (k folds, several runs) of the
same task are averaged (soft vote). Output: `ImageID, p0, p1, ...` for a task model, or
`ImageID, mask_p0, ..., age_p2` for a `multi` model.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastmask.argtypes import non_negative_int, positive_int
from fastmask.data import read_eval
from fastmask.errors import FastmaskError
from fastmask.schema import heads, outputs_by_head, prediction_columns

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A trained model ready for inference, with what it needs to see images as in training."""

    path: Path
    task: str
    model: Any
    image_size: tuple[int, int]
    augment: str
    config: dict[str, Any]
    # Training class frequencies per head (None in checkpoints from before they were kept).
    class_prior: dict[str, list[float]] | None = None
    # The face detector a face-cropping model trained on, as its checkpoint or export
    # recorded it (None, from before runs kept it: look it up, `fastmask.crops.face_detector`).
    face_detector: str | None = None

    @property
    def heads(self) -> tuple[str, ...]:
        return heads(self.task)


def find_checkpoints(sources: Sequence[str | Path], which: str = "best") -> list[Path]:
    """Checkpoint files from files, run folders, or fold parents (run/fold*/best.pt)."""
    found: list[Path] = []
    for source in sources:
        p = Path(source)
        if p.is_file():
            found.append(p)
        elif (p / f"{which}.pt").is_file():
            found.append(p / f"{which}.pt")
        elif folds := sorted(p.glob(f"fold*/{which}.pt")):
            found.extend(folds)
        else:
            raise FastmaskError(
                f"{p}: not a checkpoint, a run folder with {which}.pt, or a folder of folds"
            )
    return found


def load_model(path: Path, device: Any) -> LoadedModel:
    """Rebuild the run's model from its checkpoint (no download: weights come from the file)."""
    import torch

    from fastmask.models import build_model
    from fastmask.train.config import TrainConfig
    from fastmask.train.runfiles import inference_weights, load_checkpoint

    ckpt = load_checkpoint(path)
    config = TrainConfig.from_json(ckpt["config"])
    model = build_model(config.model, config.task, pretrained=False)
    model.load_state_dict(inference_weights(ckpt))
    model.eval().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    augment = config.augment or "none"
    size = (int(config.image_size[0]), int(config.image_size[1]))
    prior = ckpt.get("state", {}).get("class_prior")
    detector = ckpt.get("state", {}).get("face_detector")
    return LoadedModel(path, config.task, model, size, augment, ckpt["config"], prior, detector)


def predict_probabilities(
    loaded: LoadedModel,
    paths: Sequence[str],
    *,
    device: Any,
    batch_size: int = 64,
    threads: int | None = None,
    tta: bool = False,
    crop_boxes: Sequence[Any] | None = None,
) -> dict[str, np.ndarray]:
    """Softmax probabilities per head for `paths`, in order: {task: [N, classes]}."""
    import torch

    from fastmask.crops import loader_augment
    from fastmask.loader import Loader

    probs: dict[str, list[np.ndarray]] = {h: [] for h in loaded.heads}
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    with (
        Loader(
            list(paths),
            None,
            batch_size=batch_size,
            image_size=loaded.image_size,
            train=False,
            augment=loader_augment(loaded.augment, loaded.config),
            threads=threads,
            crop_boxes=crop_boxes,
            device=device if device.type == "cuda" else None,
            normalize=True,
        ) as loader,
        torch.inference_mode(),
        autocast,
    ):
        for images, _ in loader:
            x = images.to(device, non_blocking=True)
            outs = outputs_by_head(loaded.model(x), loaded.task)
            if tta:
                flipped = outputs_by_head(loaded.model(x.flip(3)), loaded.task)
                for h in outs:
                    outs[h] = (outs[h].float().softmax(1) + flipped[h].float().softmax(1)) / 2
            else:
                outs = {h: o.float().softmax(1) for h, o in outs.items()}
            for h in loaded.heads:
                probs[h].append(outs[h].cpu().numpy())
    return {h: np.concatenate(v) for h, v in probs.items()}


def predict(
    sources: Sequence[str | Path],
    data: str | Path,
    out: str | Path,
    *,
    tta: bool = False,
    batch_size: int = 64,
    threads: int | None = None,
    device: str = "auto",
    which: str = "best",
    lenient: bool = False,
    on_error: str = "raise",
) -> pd.DataFrame:
    """Average the probabilities of every checkpoint in `sources` over eval/info.csv rows.

    on_error="raise" stops at an image that cannot be decoded. "fallback" decodes every image
    once first, and gives each one that fails (or has no file) the most likely class of the
    training prior; they are listed in `<out stem>.fallback.csv` and in the log.
    """
    import torch

    from fastmask.crops import face_crop_boxes
    from fastmask.files import write_csv_atomic, write_text_atomic
    from fastmask.train.config import TrainConfig

    dev = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    if on_error not in ON_ERROR:
        raise FastmaskError(f"on_error {on_error!r}: expected one of {', '.join(ON_ERROR)}")
    checkpoints = find_checkpoints(sources, which)
    failed: dict[int, str] = {}
    if on_error == "fallback":
        table, failed = _readable_rows(data, threads)
    else:
        table = read_eval(data, lenient=lenient)
    good = [i for i in range(len(table)) if i not in failed]
    paths = table["path"].iloc[good].tolist()
    prior: dict[str, np.ndarray] = {}
    total: dict[str, np.ndarray] = {}
    task = None
    t0 = time.perf_counter()
    for ckpt in checkpoints:
        loaded = load_model(ckpt, dev)
        if task is not None and loaded.task != task:
            raise FastmaskError(
                f"{ckpt} is a {loaded.task} model but earlier checkpoints are {task}: "
                "average checkpoints of one task per predict call"
            )
        task = loaded.task
        # The run's own framing: its face boxes (eval rows of the same faces file) or centre.
        boxes = face_crop_boxes(TrainConfig.from_json(loaded.config), paths, data)
        probs = (
            {}
            if not paths
            else predict_probabilities(
                loaded,
                paths,
                device=dev,
                batch_size=batch_size,
                threads=threads,
                tta=tta,
                crop_boxes=boxes,
            )
        )
        for h, p in probs.items():
            total[h] = total.get(h, 0) + p
        if failed:
            if loaded.class_prior is None:
                raise FastmaskError(
                    f"{ckpt} keeps no class prior (trained before fastmask kept one), so "
                    "--on-error fallback cannot answer for unreadable images; retrain or fix them"
                )
            for h in loaded.heads:
                prior[h] = prior.get(h, 0) + np.asarray(loaded.class_prior[h])
        del loaded
    seconds = time.perf_counter() - t0
    assert task is not None
    frame = pd.DataFrame({"ImageID": table["ImageID"]})
    for h, columns in prediction_columns(task).items():
        mean = np.zeros((len(table), len(columns)))
        if good:
            mean[good] = total[h] / len(checkpoints)
        if failed:
            # One-hot on the prior's most likely class: a definite answer, marked in the sidecar.
            mean[list(failed)] = np.eye(len(columns))[int(np.argmax(prior[h]))]
        for j, column in enumerate(columns):
            frame[column] = mean[:, j]
    write_csv_atomic(frame, out)
    # mask and age files have the same columns: the task beside them lets combine tell.
    record = {"task": task, "checkpoints": [str(c) for c in checkpoints], "tta": tta}
    write_text_atomic(record_path(out), json.dumps(record, indent=2) + "\n")
    if failed:
        _write_fallbacks(out, table, failed, {h: int(np.argmax(p)) for h, p in prior.items()})
    else:
        fallback_path(out).unlink(missing_ok=True)  # a stale list would name readable images
    passes = len(checkpoints) * (2 if tta else 1)
    rate = len(paths) * len(checkpoints) / seconds
    log.info(
        "predicted %d images with %d checkpoint(s)%s in %.1f s: %.1f images/s (%d passes)",
        len(paths), len(checkpoints), " + flip TTA" if tta else "", seconds, rate, passes,
    )  # fmt: skip
    print(
        f"{out}: {len(paths)} images, {task}, {len(checkpoints)} checkpoint(s), {rate:.1f} images/s"
    )
    return frame


ON_ERROR = ("raise", "fallback")


def _readable_rows(data: str | Path, threads: int | None) -> tuple[pd.DataFrame, dict[int, str]]:
    """Every info.csv row, and {row: reason} for those without a file or a decodable image."""
    from fastmask.check import check_files
    from fastmask.data import Problems, eval_table

    problems = Problems(lenient=True, warn=False)
    table = eval_table(data, problems)
    failed = {i: "no image file" for i, p in enumerate(table["path"]) if p is None}
    rows = [i for i in range(len(table)) if i not in failed]
    results = check_files([str(table["path"].iloc[i]) for i in rows], full=True, threads=threads)
    for i, r in zip(rows, results, strict=True):
        if r.error is not None:
            failed[i] = r.error
    return table, dict(sorted(failed.items()))


def record_path(out: str | Path) -> Path:
    """`OUT.json` beside a prediction file: the task and checkpoints that made it."""
    return Path(f"{out}.json")


def fallback_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.fallback.csv")


def _write_fallbacks(
    out: str | Path, table: pd.DataFrame, failed: dict[int, str], classes: dict[str, int]
) -> None:
    from fastmask.files import write_csv_atomic

    rows = [
        {"ImageID": table["ImageID"].iloc[i], "path": table["path"].iloc[i], "reason": reason}
        for i, reason in failed.items()
    ]
    sidecar = write_csv_atomic(
        pd.DataFrame(rows, columns=["ImageID", "path", "reason"]), fallback_path(out)
    )
    answer = ", ".join(f"{h} class {k}" for h, k in classes.items())
    listing = "\n".join(f"  {r['ImageID']}: {r['reason']}" for r in rows)
    log.warning(
        "%d image(s) could not be read and got the training prior's most likely class (%s); "
        "listed in %s:\n%s",
        len(rows),
        answer,
        sidecar,
        listing,
    )


def _run(args: argparse.Namespace) -> int:
    predict(
        args.runs,
        args.data,
        args.out,
        tta=args.tta,
        batch_size=args.batch_size,
        threads=args.threads,
        device=args.device,
        which=args.checkpoint,
        lenient=args.lenient,
        on_error=args.on_error,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="class probabilities for every eval image (soft vote of checkpoints, flip TTA)",
        description="Write ImageID + one probability column per class, in info.csv order.",
    )
    p.add_argument("runs", nargs="+", help="run folders, fold parents or checkpoint files")
    p.add_argument("--data", required=True, help="DATA or DATA/eval (info.csv + images/)")
    p.add_argument("--out", required=True, help="prediction CSV to write")
    p.add_argument("--tta", action="store_true", help="average with horizontally flipped images")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument(
        "--threads", type=non_negative_int, default=None, help="loader threads (all cores)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--lenient", action="store_true", help="skip info.csv rows without a file")
    p.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default="raise",
        help="raise (default): stop at an image that cannot be decoded; fallback: answer the "
        "training prior's most likely class for it, listed in OUT_STEM.fallback.csv",
    )
    p.set_defaults(func=_run)
