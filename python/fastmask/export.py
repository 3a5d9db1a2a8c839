"""Export: `python -m fastmask export RUN --format torchscript|onnx`.

files -> data index -> native loader -> trainer -> **export** -> classify

`export RUN --format torchscript|onnx` writes the run's model (eval mode, CPU, float32) as
one file taking float [N, 3, H, W] images normalised as in training (any N), plus a sidecar
`FILE.json` that says how to feed it and read it: task, image size, augment preset and its
eval crop, mean/std, label maps and output names, and the checkpoint it came from. The same
JSON is embedded in the file (TorchScript extra file, ONNX metadata), so a renamed file
still loads. Outputs are logits, one per head, in the order of `outputs` (mask, gender, age
for a multi model); TorchScript returns them as a tuple.

`fastmask.classify` loads such files and runs them (`classify`).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastmask.classify import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    FORMATS,
    INPUT_NAME,
    METADATA_KEY,
    SUFFIXES,
    _make_runner,
    _quiet_torch_deprecations,
    _require,
    read_metadata,
    sidecar_path,
)
from fastmask.crops import (
    EVAL_CROP,  # noqa: F401 - the default centre crop, for importers
    FACE_CROPS,
    eval_crop,
    face_detector,
)
from fastmask.errors import FastmaskError
from fastmask.files import write_bytes_atomic
from fastmask.predict import LoadedModel, find_checkpoints, load_model
from fastmask.schema import LABEL_NAMES
from fastmask.schema import heads as task_heads

if TYPE_CHECKING:
    from torch import Tensor, nn

log = logging.getLogger(__name__)

ONNX_OPSET = 17
# Largest logit difference (relative to the logits' scale) accepted when an export is checked.
VERIFY_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------


def _tuple_outputs(model: nn.Module, heads: tuple[str, ...]) -> nn.Module:
    """Wrap a model so it returns a tuple of logits in `heads` order (exporters want tensors)."""
    from torch import nn

    class TupleOutputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Tensor) -> tuple[Tensor, ...]:
            out = self.model(x)
            if isinstance(out, dict):
                return tuple(out[h] for h in heads)
            return (out,)

    return TupleOutputs().eval()


def face_crop(config: dict[str, Any], detector: str | None = None) -> dict[str, Any] | None:
    """How a face-cropping run framed images (see `fastmask.crops`), None for the centre crop:
    the margin, whether the boxes were turned to level the eyes, and the detector that found
    the faces (classify runs the same one): the one the run recorded, else its faces file's."""
    crop = config.get("crop", "center")
    if crop not in FACE_CROPS:
        return None
    return {
        "margin": config.get("face_margin", 0.3),
        "aligned": crop == "face-aligned",
        "detector": detector or face_detector(config),
    }


def export_metadata(loaded: LoadedModel, fmt: str, file_name: str) -> dict[str, Any]:
    """The sidecar: everything a consumer needs to feed the model and read its outputs."""
    from fastmask import __version__
    from fastmask.loader import REFERENCE_MEAN, REFERENCE_STD

    h, w = loaded.image_size
    heads = task_heads(loaded.task)
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "model_format": fmt,
        "file": file_name,
        "task": loaded.task,
        "model": loaded.config.get("model", ""),
        "image_size": [h, w],
        "augment": loaded.augment,
        "crop": eval_crop(loaded.config),
        # A --crop face run was fed face boxes (faces.csv) grown by this margin per side, a
        # face-aligned run those boxes turned so the eyes are level (`aligned`); the centre
        # crop above applies only to images without a box.
        "face_crop": face_crop(loaded.config, loaded.face_detector),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, h, w],
            "dtype": "float32",
            "layout": "NCHW, RGB",
            "normalize": "(pixel / 255 - mean) / std",
        },
        "mean": list(REFERENCE_MEAN),
        "std": list(REFERENCE_STD),
        "outputs": list(heads),
        "label_maps": {t: list(LABEL_NAMES[t]) for t in heads},
        "class_encoding": "mask * 6 + gender * 3 + age",
        "source": {"checkpoint": str(loaded.path.resolve()), "config": loaded.config},
        "fastmask_version": __version__,
        "onnx_opset": ONNX_OPSET if fmt == "onnx" else None,
    }


def _torchscript_bytes(module: nn.Module, example: Tensor, meta_json: str) -> bytes:
    import torch

    with _quiet_torch_deprecations(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={METADATA_KEY: meta_json})
    return buf.getvalue()


def _onnx_bytes(
    module: nn.Module, example: Tensor, heads: tuple[str, ...], meta_json: str
) -> bytes:
    import onnx
    import torch

    # The TorchScript-based exporter needs only `onnx`; the dynamo one also needs onnxscript.
    legacy: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        legacy["dynamo"] = False
    batch = {0: "batch"}
    try:
        # A path, not a buffer: the target type torch.onnx.export declares.
        with tempfile.TemporaryDirectory() as tmp, _quiet_torch_deprecations(), torch.no_grad():
            target = Path(tmp) / "model.onnx"
            torch.onnx.export(
                module,
                (example,),
                str(target),
                input_names=[INPUT_NAME],
                output_names=list(heads),
                dynamic_axes={INPUT_NAME: batch, **{h: batch for h in heads}},
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
                **legacy,
            )
            proto = onnx.load(str(target))
    except Exception as err:  # exporter errors have no common base class
        raise FastmaskError(
            f"ONNX export failed ({type(err).__name__}: {err}); try --format torchscript"
        ) from err
    onnx.helper.set_model_props(proto, {METADATA_KEY: meta_json})
    return bytes(proto.SerializeToString())


def _verify(
    module: nn.Module, data: bytes, fmt: str, heads: tuple[str, ...], h: int, w: int
) -> None:
    """Run the exported bytes on a batch size other than the traced one; refuse a mismatch."""
    import torch

    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        log.info("onnxruntime is not installed: the ONNX file was not checked")
        return
    x = torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(0))
    runner = _make_runner(fmt, data, heads, torch.device("cpu"))[0]
    with torch.no_grad():
        expected = module(x)
        got = runner.run(x)
    for head, e, g in zip(heads, expected, got, strict=True):
        diff = float((e - g).abs().max())
        if diff > VERIFY_TOLERANCE * max(1.0, float(e.abs().max())):
            raise FastmaskError(f"the exported {fmt} model's {head} logits differ by {diff:.3g}")


def export_model(
    source: str | Path,
    fmt: str = "torchscript",
    out: str | Path | None = None,
    *,
    which: str = "best",
) -> Path:
    """Export the checkpoint of `source` (run folder or checkpoint file); returns the file."""
    import torch

    if fmt not in FORMATS:
        raise FastmaskError(f"export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require("onnx", "ONNX export")
    checkpoints = find_checkpoints([source], which)
    if len(checkpoints) != 1:
        raise FastmaskError(
            f"{source} holds {len(checkpoints)} checkpoints (folds); export one of them, "
            f"e.g. {checkpoints[0].parent}"
        )
    checkpoint = checkpoints[0]
    path = Path(out) if out is not None else checkpoint.with_suffix(SUFFIXES[fmt])
    if path.resolve() == checkpoint.resolve():
        raise FastmaskError(f"--out {path} is the checkpoint itself; choose another file")
    loaded = load_model(checkpoint, torch.device("cpu"))
    heads = task_heads(loaded.task)
    module = _tuple_outputs(loaded.model.float().eval(), heads)
    h, w = loaded.image_size
    meta = export_metadata(loaded, fmt, path.name)
    meta_json = json.dumps(meta, indent=2) + "\n"
    example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    if fmt == "torchscript":
        data = _torchscript_bytes(module, example, meta_json)
    else:
        data = _onnx_bytes(module, example, heads, meta_json)
    _verify(module, data, fmt, heads, h, w)
    write_bytes_atomic(path, data)
    write_bytes_atomic(sidecar_path(path), meta_json.encode())
    log.info("exported %s (%s, %s) to %s", checkpoint, loaded.task, fmt, path)
    return path


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def _run_export(args: argparse.Namespace) -> int:
    path = export_model(args.run, args.format, args.out, which=args.checkpoint)
    meta = read_metadata(path)
    h, w = meta["image_size"]
    print(
        f"{path}: {meta['model_format']} {meta['task']} model, input {INPUT_NAME} float32 "
        f"[N, 3, {h}, {w}], outputs {', '.join(meta['outputs'])}; metadata {sidecar_path(path)}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's model as TorchScript or ONNX, with a metadata sidecar",
        description="Export a checkpoint for serving: eval mode, CPU, float32, any batch size; "
        "FILE.json beside it says how to feed and read it.",
    )
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("--format", choices=FORMATS, default="torchscript", help="(torchscript)")
    p.add_argument("--out", help="file to write (default: beside the checkpoint, .ts / .onnx)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.set_defaults(func=_run_export)
