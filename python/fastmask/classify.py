"""`python -m fastmask classify`: the exported-file format, loading it, and classifying images.

files -> data index -> native loader -> trainer -> export -> **classify**

An exported model (written by `fastmask.export`) is one file taking float [N, 3, H, W]
images normalised as in training, plus a sidecar `FILE.json` (also embedded in the file)
that says how to feed it and read it. `classify IMAGE ... --model M ...` names mask, gender,
age band and class (0..17) of each image, with one multi model or three task models
(exported files or runs), preprocessing through the native loader's eval crop exactly as
`predict` does; models trained on face crops see the faces their run's detector finds.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastmask.argtypes import non_negative_int, positive_int
from fastmask.errors import FastmaskError
from fastmask.faces.detectors import DETECTORS
from fastmask.predict import LoadedModel, find_checkpoints, load_model, predict_probabilities
from fastmask.schema import (
    AGE_NAMES,
    GENDER_NAMES,
    LABEL_NAMES,
    MASK_NAMES,
    TASKS,
    TRAIN_TASKS,
    class_names,
    encode_class,
)
from fastmask.schema import heads as task_heads

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from fastmask.faces import Face

log = logging.getLogger(__name__)

EXPORT_FORMAT = "fastmask-export"
EXPORT_FORMAT_VERSION = 1
FORMATS = ("torchscript", "onnx")
SUFFIXES = {"torchscript": ".ts", "onnx": ".onnx"}
METADATA_KEY = "fastmask.json"  # TorchScript extra file and ONNX metadata_props key
INPUT_NAME = "image"


def _require(module: str, purpose: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise FastmaskError(
            f"{purpose} needs the {module} package: pip install 'fastmask[onnx]' "
            f"(or pip install {module})"
        )


@contextlib.contextmanager
def _quiet_torch_deprecations() -> Iterator[None]:
    # torch.jit and the TorchScript-based ONNX exporter warn that they are deprecated; the
    # formats asked for are exactly these, so the warning is noise to the user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*(ONNX|onnx)")
        yield


def sidecar_path(path: str | Path) -> Path:
    """Where the metadata of an exported file lives: `FILE.json` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".json")


# ---------------------------------------------------------------------------------------
# Loading exported files
# ---------------------------------------------------------------------------------------


class ExportedRunner:
    """Calls an exported model like the trained one: a dict of logits for multi, else a tensor."""

    def __init__(self, fmt: str, model: Any, heads: tuple[str, ...]) -> None:
        self.fmt = fmt
        self.model = model
        self.heads = heads

    def run(self, x: Tensor) -> tuple[Tensor, ...]:
        import torch

        if self.fmt == "torchscript":
            return tuple(self.model(x.float()))
        # onnxruntime runs on the CPU and wants a dense float32 array.
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = self.model.run(list(self.heads), {INPUT_NAME: array})
        return tuple(torch.from_numpy(np.asarray(o)).to(x.device) for o in outs)

    def __call__(self, x: Tensor) -> Any:
        outs = self.run(x)
        return dict(zip(self.heads, outs, strict=True)) if len(self.heads) > 1 else outs[0]


def _make_runner(
    fmt: str, source: bytes | Path, heads: tuple[str, ...], device: torch.device
) -> tuple[ExportedRunner, str | None]:
    """The runner of an exported model and the metadata JSON embedded in it (None if absent)."""
    import torch

    if fmt == "torchscript":
        extra = {METADATA_KEY: ""}
        f = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        try:
            with _quiet_torch_deprecations():
                module = torch.jit.load(f, map_location=device, _extra_files=extra)
        except (OSError, RuntimeError, ValueError) as err:
            raise _unloadable(source, fmt, err) from err
        module.eval()
        embedded = extra[METADATA_KEY]
        text = embedded.decode() if isinstance(embedded, bytes) else embedded
        return ExportedRunner(fmt, module, heads), text or None
    _require("onnxruntime", "running an ONNX model")
    import onnxruntime

    if device.type != "cpu":
        log.info("ONNX models run on the CPU here (onnxruntime CPUExecutionProvider)")
    try:
        session = onnxruntime.InferenceSession(
            source if isinstance(source, bytes) else str(source),
            providers=["CPUExecutionProvider"],
        )
    except Exception as err:  # onnxruntime's errors share no base class but Exception
        raise _unloadable(source, fmt, err) from err
    meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return ExportedRunner(fmt, session, heads), meta


def _unloadable(source: bytes | Path, fmt: str, err: Exception) -> FastmaskError:
    name = "the exported model" if isinstance(source, bytes) else str(source)
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return FastmaskError(f"cannot load {name} as a {fmt} model (truncated or not one?): {reason}")


def _close(values: Any, reference: Sequence[float]) -> bool:
    try:
        return bool(np.allclose(np.asarray(values, dtype=np.float64), reference))
    except (TypeError, ValueError):  # missing, or not three numbers
        return False


def _check_metadata(meta: Any, path: Path) -> dict[str, Any]:
    from fastmask.loader import PRESETS, REFERENCE_MEAN, REFERENCE_STD

    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise FastmaskError(f"{path}: metadata is not a {EXPORT_FORMAT} file")
    if meta.get("format_version") != EXPORT_FORMAT_VERSION:
        raise FastmaskError(
            f"{path}: export format {meta.get('format_version')!r}; this fastmask reads "
            f"{EXPORT_FORMAT_VERSION}"
        )
    task = meta.get("task")
    if task not in TRAIN_TASKS or meta.get("outputs") != list(task_heads(str(task))):
        raise FastmaskError(f"{path}: task {task!r} with outputs {meta.get('outputs')!r}")
    if meta.get("model_format") not in FORMATS or meta.get("augment") not in PRESETS:
        raise FastmaskError(f"{path}: unknown model format or augment preset in its metadata")
    size = meta.get("image_size")
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int) and v > 0 for v in size)
    ):
        raise FastmaskError(f"{path}: image_size {size!r} is not [height, width]")
    # The native loader normalises with the reference mean/std, as training did.
    if not (_close(meta.get("mean"), REFERENCE_MEAN) and _close(meta.get("std"), REFERENCE_STD)):
        raise FastmaskError(
            f"{path}: mean/std {meta.get('mean')}/{meta.get('std')} differ from the loader's "
            f"{list(REFERENCE_MEAN)}/{list(REFERENCE_STD)}"
        )
    return meta


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The sidecar `FILE.json` of an exported file, checked."""
    path = Path(path)
    side = sidecar_path(path)
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as err:
        raise FastmaskError(f"{path}: cannot read its metadata {side}: {err}") from err
    return _check_metadata(meta, path)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith(f"/extra/{METADATA_KEY}") for n in z.namelist())


def is_exported(path: Path) -> bool:
    """An exported file (vs a training checkpoint): by suffix, sidecar or embedded metadata."""
    return path.is_file() and (
        path.suffix == ".onnx" or sidecar_path(path).is_file() or _is_torchscript(path)
    )


def load_exported(path: str | Path, device: torch.device) -> LoadedModel:
    """An exported file as a LoadedModel, so `predict_probabilities` runs it like a checkpoint."""
    path = Path(path)
    side = sidecar_path(path)
    side_meta = read_metadata(path) if side.is_file() else None
    fmt = "onnx" if path.suffix == ".onnx" else "torchscript"
    fmt = side_meta["model_format"] if side_meta is not None else fmt
    runner, embedded = _make_runner(fmt, path, (), device)
    # The embedded copy travels with the file, so it wins over a sidecar.
    meta = _check_metadata(json.loads(embedded), path) if embedded else side_meta
    if meta is None:
        raise FastmaskError(f"{path}: no fastmask metadata inside and no sidecar {side}")
    runner.heads = tuple(meta["outputs"])
    size = (int(meta["image_size"][0]), int(meta["image_size"][1]))
    config = meta.get("source", {}).get("config", {})
    detector = (meta.get("face_crop") or {}).get("detector")
    return LoadedModel(
        path, meta["task"], runner, size, meta["augment"], config, face_detector=detector
    )


def load_for_serving(source: str | Path, device: torch.device, which: str = "best") -> LoadedModel:
    """An exported file, a checkpoint file, or a run folder holding one checkpoint."""
    path = Path(source)
    if is_exported(path):
        return load_exported(path, device)
    checkpoints = find_checkpoints([path], which)
    if len(checkpoints) != 1:
        raise FastmaskError(
            f"{path} holds {len(checkpoints)} checkpoints (folds); name one of them"
        )
    return load_model(checkpoints[0], device)


# ---------------------------------------------------------------------------------------
# Classify
# ---------------------------------------------------------------------------------------


def check_model_set(models: Sequence[LoadedModel]) -> dict[str, LoadedModel]:
    """One multi model, or one model per task (any order); anything else is refused."""
    if any(m.task == "multi" for m in models):
        if len(models) != 1:
            raise FastmaskError(
                "a multi model predicts all three heads: pass it alone, not among "
                + ", ".join(f"{m.path} ({m.task})" for m in models)
            )
        return {"multi": models[0]}
    by_task: dict[str, LoadedModel] = {}
    for m in models:
        if m.task in by_task:
            raise FastmaskError(
                f"two {m.task} models ({by_task[m.task].path} and {m.path}); "
                "pass one mask, one gender and one age model"
            )
        by_task[m.task] = m
    missing = [t for t in TASKS if t not in by_task]
    if missing:
        raise FastmaskError(
            f"no {' or '.join(missing)} model: classify needs one multi model or three task "
            "models (mask, gender and age)"
        )
    return {t: by_task[t] for t in TASKS}


def face_boxes(
    models: dict[str, LoadedModel],
    paths: Sequence[str],
    detector: str | None = None,
    threads: int | None = None,
) -> tuple[dict[str, list[Any] | None], list[Face | None] | None]:
    """Each model's crop boxes, as `predict` frames its images: a model trained on face crops
    sees the face that its detector (or `detector`) finds, grown by its margin, or the centre
    crop where there is none; None for a centre-crop model. Also the faces found (the first
    detector's), None when no model crops to faces."""
    from fastmask.crops import FACE_CROPS, boxes_from_faces, face_detector
    from fastmask.faces import detect_paths
    from fastmask.faces.cache import as_written

    found: dict[str, list[Face | None]] = {}
    boxes: dict[str, list[Any] | None] = {}
    for task, m in models.items():
        crop = m.config.get("crop", "center")
        if crop not in FACE_CROPS:
            boxes[task] = None
            continue
        name = detector or m.face_detector or face_detector(m.config)
        if name not in found:
            log.info("classify: faces by %s for the %s model (--crop %s)", name, task, crop)
            faces = detect_paths(paths, name, workers=threads or os.cpu_count() or 1)
            found[name] = [as_written(f) for f in faces]
        boxes[task] = boxes_from_faces(crop, float(m.config.get("face_margin", 0.3)), found[name])
    if detector and not found:
        log.warning(
            "--detector %s: no model here was trained on face crops; every image gets its "
            "model's centre crop",
            detector,
        )
    return boxes, next(iter(found.values()), None)


def classification_records(
    paths: Sequence[str],
    probs: dict[str, np.ndarray],
    faces: Sequence[Face | None] | None = None,
) -> list[dict[str, Any]]:
    """Per image: head names, class 0..17, confidences and every head's probabilities; with
    `faces`, the face box the face-cropping models were fed (None: the centre crop)."""
    picks = {h: probs[h].argmax(1) for h in TASKS}
    classes = encode_class(picks["mask"], picks["gender"], picks["age"])
    names = class_names()
    records = []
    for i, path in enumerate(paths):
        confidence = {h: float(probs[h][i, picks[h][i]]) for h in TASKS}
        # Heads are independent outputs: the class's confidence is their product.
        confidence["class"] = float(np.prod([confidence[h] for h in TASKS]))
        records.append(
            {
                "path": path,
                "mask": MASK_NAMES[picks["mask"][i]],
                "gender": GENDER_NAMES[picks["gender"][i]],
                "age": AGE_NAMES[picks["age"][i]],
                "class": int(classes[i]),
                "class_name": names[int(classes[i])],
                "confidence": confidence,
                "probabilities": {
                    h: dict(zip(LABEL_NAMES[h], map(float, probs[h][i]), strict=True))
                    for h in TASKS
                },
            }
        )
        if faces is not None:
            face = faces[i]
            records[-1]["face"] = None if face is None else [round(float(v), 1) for v in face.box]
    return records


def classify(
    images: Sequence[str | Path],
    sources: Sequence[str | Path],
    *,
    tta: bool = False,
    device: str = "auto",
    threads: int | None = None,
    batch_size: int = 32,
    which: str = "best",
    detector: str | None = None,
) -> list[dict[str, Any]]:
    """Classify `images` with one multi model or three task models; one record per image.

    Models trained on face crops are fed the faces found by the detector their run used (or
    `detector`), as `predict` feeds them the run's faces.csv."""
    import torch

    dev = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    models = check_model_set([load_for_serving(s, dev, which) for s in sources])
    paths = [os.fspath(p) for p in images]
    boxes, faces = face_boxes(models, paths, detector, threads)
    probs: dict[str, np.ndarray] = {}
    for task, model in models.items():
        probs.update(
            predict_probabilities(
                model,
                paths,
                device=dev,
                batch_size=batch_size,
                threads=threads,
                tta=tta,
                crop_boxes=boxes[task],
            )
        )
    return classification_records(paths, probs, faces)


def format_record(r: dict[str, Any]) -> str:
    c = r["confidence"]
    no_face = "  (no face found: centre crop)" if "face" in r and r["face"] is None else ""
    return (
        f"{r['path']}: class {r['class']} ({c['class']:.2f})  mask {r['mask']} ({c['mask']:.2f})"
        f"  gender {r['gender']} ({c['gender']:.2f})  age {r['age']} ({c['age']:.2f}){no_face}"
    )


def _run_classify(args: argparse.Namespace) -> int:
    records = classify(
        args.images,
        args.model,
        tta=args.tta,
        device=args.device,
        threads=args.threads,
        batch_size=args.batch_size,
        which=args.checkpoint,
        detector=args.detector,
    )
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for r in records:
            print(format_record(r))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "classify",
        help="mask, gender, age band and class of images (one multi or three task models)",
        description="Classify images with one multi model or three task models (mask, gender, "
        "age in any order): exported files (.ts/.onnx) or run folders / checkpoints.",
    )
    c.add_argument("images", nargs="+", help="image files")
    c.add_argument(
        "--model", nargs="+", action="extend", required=True, help="exported files or runs"
    )
    c.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    c.add_argument("--tta", action="store_true", help="average with horizontally flipped images")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    c.add_argument(
        "--threads", type=non_negative_int, default=None, help="loader threads (all cores)"
    )
    c.add_argument("--batch-size", type=positive_int, default=32)
    c.add_argument("--checkpoint", choices=["best", "last"], default="best", help="for runs")
    c.add_argument(
        "--detector",
        choices=sorted(DETECTORS),
        default=None,
        help="face detector for models trained on face crops (default: the one their run used)",
    )
    c.set_defaults(func=_run_classify)
