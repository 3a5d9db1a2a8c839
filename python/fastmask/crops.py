"""Which part of each image a model sees: the centre crop, or the face box of `faces` (turned
so the eyes are level with --crop face-aligned).

Training and inference ask the same function, so a model is always fed the framing it was
trained with.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from fastmask import _native
from fastmask.errors import FastmaskError

if TYPE_CHECKING:
    from fastmask.faces import Face
    from fastmask.loader import AugmentConfig, CropBox
    from fastmask.train.config import TrainConfig

_T = TypeVar("_T")

log = logging.getLogger(__name__)

# The --crop values that frame images by their face box.
FACE_CROPS = ("face", "face-aligned")

# The centre crop of every preset when a run sets none (defined in rust/augment/config.rs).
EVAL_CROP: dict[str, Any] = dict(_native.EVAL_CROP)


def eval_crop(config: Mapping[str, Any]) -> dict[str, Any]:
    """The centre crop a run (its config.json) frames images with, in eval and training."""
    crop = dict(EVAL_CROP)
    if config.get("center_crop") is not None:
        crop["center_crop"] = [float(v) for v in config["center_crop"]]
    return crop


def loader_augment(preset: str, config: Mapping[str, Any]) -> AugmentConfig:
    """The loader's augmentation: the run's preset with its framing knobs."""
    from fastmask.loader import AugmentConfig

    crop = config.get("center_crop")
    return AugmentConfig(
        preset or "none",
        center_crop=None if crop is None else (float(crop[0]), float(crop[1])),
    )


def faces_path(c: TrainConfig, data: str | Path | None = None) -> Path:
    """The run's faces file: --faces, else faces.csv in DATA (`data` overrides the run's)."""
    if c.faces:
        return Path(c.faces)
    root = Path(data if data is not None else c.data)
    # predict may be given DATA/eval; the faces file sits beside the data index in DATA.
    if (root / "info.csv").exists() and not (root / "faces.csv").exists():
        root = root.parent
    return root / "faces.csv"


def data_key(path: str) -> str:
    """A path from its `train/images/...` or `eval/images/...` part on; itself otherwise."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in ("train", "eval") and parts[i + 1] == "images":
            return "/".join(parts[i:])
    return path


def face_crop_boxes(
    c: TrainConfig, paths: list[str], data: str | Path | None = None
) -> list[CropBox | None] | None:
    """Per path the face box grown by the margin (None: centre crop); None for --crop center.

    --crop face-aligned gives each box with the angle that levels its eyes,
    (x0, y0, x1, y1, angle), as `fastmask.faces.alignment` frames it; angle 0 where faces.csv
    has no landmarks. The loader turns the box about its centre (see `Loader`)."""
    if c.crop not in FACE_CROPS:
        return None
    from fastmask.faces import load_faces

    source = faces_path(c, data)
    if not source.exists():
        raise FastmaskError(
            f"--crop {c.crop} needs {source}: run `python -m fastmask faces {source.parent}` first"
        )
    found = _lookup(load_faces(source), paths)
    absent = [p for p, f in zip(paths, found, strict=True) if f is _ABSENT]
    if absent:
        # Centre crops here would feed the model other framing than it was trained with.
        remake = f"{source.parent}" if not c.faces else f"DATA --out {source}"
        raise FastmaskError(
            f"--crop {c.crop}: {len(absent)} of {len(paths)} images have no row in {source} "
            f"(first: {absent[0]}); it was made for other images: run "
            f"`python -m fastmask faces {remake}` again"
        )
    out = boxes_from_faces(c.crop, c.face_margin, cast("list[Face | None]", found))
    if c.crop == "face-aligned":
        eyes = [f is not None and f.landmarks is not None for f in found]
        log.info("face-aligned crop: %d images have eyes to level", sum(eyes))
    log.info("face crop: %d of %d images have a face box in %s", sum(b is not None for b in out),
             len(out), source)  # fmt: skip
    return out


def boxes_from_faces(
    crop: str, margin: float, faces: Sequence[Face | None]
) -> list[CropBox | None]:
    """The loader's box per image from its face (None: the centre crop), framed as a run with
    --crop `crop` (face or face-aligned) and --face-margin `margin` is."""
    from fastmask.faces import expand_box

    if crop == "face":
        return [None if f is None else expand_box(f.box, margin) for f in faces]
    return [None if f is None else aligned_box(f, margin) for f in faces]


def face_detector(config: Mapping[str, Any]) -> str:
    """The detector whose boxes a face-cropping run (its config.json) was fed: the one its
    faces file records (`faces.csv.json`), else the default one."""
    import json

    from fastmask.faces import DEFAULT_DETECTOR
    from fastmask.train.config import TrainConfig

    try:
        record = faces_path(TrainConfig.from_json(dict(config)))
        name = json.loads(record.with_name(record.name + ".json").read_text())["detector"]["name"]
    except (OSError, ValueError, TypeError, KeyError, FastmaskError):
        return DEFAULT_DETECTOR
    return str(name)


def aligned_box(face: Face, margin: float) -> CropBox | None:
    """The face box grown by `margin` of its size per side with the angle of its eye line, as
    (x0, y0, x1, y1, angle); angle 0 without landmarks, None for an empty box."""
    from fastmask.faces import alignment

    x0, y0, x1, y1 = face.box
    if not (x1 > x0 and y1 > y0):
        return None
    # Without landmarks the box's top edge stands in for the eye line: level, no turn.
    left, right = face.landmarks[:2] if face.landmarks is not None else ((x0, y0), (x1, y0))
    a = alignment(face.box, left, right, margin)
    (cx, cy), (w, h) = a.centre, a.size
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, a.angle)


# What `_lookup` gives for a path that has no row at all (None is a row saying "no face").
_ABSENT: Any = object()


def _lookup(found: Mapping[str, _T], paths: list[str]) -> list[_T]:
    """Each path's value, `_ABSENT` where it has none.

    Keys are written as data.build_index/read_eval spell paths; resolve to forgive ./ or /abs,
    then match by the part inside the data folder, which survives a move of the folder."""
    resolved = {os.path.realpath(k): v for k, v in found.items()}
    inside = {data_key(k): v for k, v in found.items()}
    return [
        found.get(p, resolved.get(os.path.realpath(p), inside.get(data_key(p), _ABSENT)))
        for p in paths
    ]
