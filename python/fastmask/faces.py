"""`fastmask faces`: one face box per image, detected once and cached beside the data.

The detector is OpenCV's Haar cascades (weights inside opencv-python-headless, CPU, offline).
Boxes are in pixel coordinates of the image after EXIF orientation, exactly as the native
loader decodes it. The cache is `DATA/faces.csv` (`path,x0,y0,x1,y1,score`, box fields empty
when no face) with a sidecar `faces.csv.json` fingerprint; it is reused while that matches.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastmask import DecodeError
from fastmask import data as D
from fastmask.files import write_csv_atomic, write_text_atomic

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
CSV_COLUMNS = ["path", "x0", "y0", "x1", "y1", "score"]
CACHE_VERSION = 1
DEFAULT_MARGIN = 0.3


# ---------------------------------------------------------------------------------------
# Contract used by the loader / trainer / predict
# ---------------------------------------------------------------------------------------


def load_face_boxes(csv_path: str | Path) -> dict[str, Box | None]:
    """Read a faces.csv into {path: (x0, y0, x1, y1) or None when no face was found}.

    Keys are the path strings exactly as `build_index` / `read_eval` produce them.
    """
    frame = pd.read_csv(csv_path, dtype={"path": str})
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise D.DataError(f"{csv_path}: missing column(s) {', '.join(missing)}")
    boxes: dict[str, Box | None] = {}
    for row in frame.itertuples(index=False):
        coords = (row.x0, row.y0, row.x1, row.y1)
        if any(pd.isna(c) for c in coords):
            boxes[str(row.path)] = None
        else:
            x0, y0, x1, y1 = (float(c) for c in coords)
            boxes[str(row.path)] = (x0, y0, x1, y1)
    return boxes


def expand_box(
    box: Sequence[float],
    margin: float = DEFAULT_MARGIN,
    width: float | None = None,
    height: float | None = None,
) -> Box:
    """Grow each side of (x0, y0, x1, y1) by `margin` x the box's width (x) or height (y).

    When `width` / `height` (the image size) are given, the result is clamped to the image.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    x0, y0, x1, y1 = x0 - dx, y0 - dy, x1 + dx, y1 + dy
    if width is not None:
        x0, x1 = max(0.0, x0), min(float(width), x1)
    if height is not None:
        y0, y1 = max(0.0, y0), min(float(height), y1)
    return (x0, y0, x1, y1)


# ---------------------------------------------------------------------------------------
# Detectors
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that changes the boxes; it is part of the cache fingerprint."""

    name: str
    cascade: str
    eyes_fallback: bool
    max_side: int = 320
    scale_factor: float = 1.1
    min_neighbors: int = 3
    min_size: int = 24


DETECTORS = {
    "haar": DetectorConfig("haar", "haarcascade_frontalface_default.xml", False),
    "haar-alt2": DetectorConfig("haar-alt2", "haarcascade_frontalface_alt2.xml", False),
    # A mask hides the nose and mouth the frontal cascade looks for; the eyes stay visible.
    "haar-eyes": DetectorConfig("haar-eyes", "haarcascade_frontalface_alt2.xml", True),
}
DEFAULT_DETECTOR = "haar-eyes"
EYES_MAX_SIDE = 320


class Detector:
    """One cascade set; `detect` on RGB uint8 returns (box, score) or None."""

    def __init__(self, config: DetectorConfig) -> None:
        import cv2
        from cv2.data import haarcascades  # folder of the cascade XML files inside the wheel

        self.config = config
        self._cv2 = cv2
        self._face = cv2.CascadeClassifier(haarcascades + config.cascade)
        self._eyes = (
            cv2.CascadeClassifier(haarcascades + "haarcascade_eye.xml")
            if config.eyes_fallback
            else None
        )
        if self._face.empty() or (self._eyes is not None and self._eyes.empty()):
            raise D.DataError(f"OpenCV cascade for detector {config.name!r} failed to load")

    def detect(self, rgb: np.ndarray) -> tuple[Box, float] | None:
        cv2, c = self._cv2, self.config
        height, width = rgb.shape[:2]
        full = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        # Downscaling keeps the cascade cheap; faces fill a good part of these photos.
        gray, scale = _downscale(cv2, full, c.max_side)
        found, counts = self._face.detectMultiScale2(
            gray, c.scale_factor, c.min_neighbors, minSize=(c.min_size, c.min_size)
        )
        candidates = [
            ((x / scale, y / scale, (x + w) / scale, (y + h) / scale), float(n))
            for (x, y, w, h), n in zip(found, counts, strict=True)
        ]
        if not candidates and self._eyes is not None:
            candidates = self._from_eyes(full)
        if not candidates:
            return None
        box, score = max(candidates, key=lambda bs: _centre_weighted_area(bs[0], width, height))
        x0, y0, x1, y1 = box
        return (max(0.0, x0), max(0.0, y0), min(width, x1), min(height, y1)), score

    def _from_eyes(self, full: np.ndarray) -> list[tuple[Box, float]]:
        """Face boxes implied by pairs of eyes of similar size at a similar height."""
        assert self._eyes is not None
        # Eyes are small: search a finer image, but only its upper part where eyes can be.
        gray, scale = _downscale(self._cv2, full[: int(full.shape[0] * 0.7)], EYES_MAX_SIDE)
        gw = gray.shape[1]
        eyes = self._eyes.detectMultiScale(gray, 1.1, 2, minSize=(6, 6), maxSize=(gw // 5, gw // 5))
        centres = [((x + w / 2) / scale, (y + h / 2) / scale, w / scale) for x, y, w, h in eyes]
        out: list[tuple[Box, float]] = []
        for i, (ax, ay, aw) in enumerate(centres):
            for bx, by, bw in centres[i + 1 :]:
                d = abs(ax - bx)
                if not (1.2 * max(aw, bw) < d < 4 * max(aw, bw)) or abs(ay - by) > 0.25 * d:
                    continue
                if max(aw, bw) > 1.6 * min(aw, bw):
                    continue
                cx, cy = (ax + bx) / 2, (ay + by) / 2
                # Face proportions: eye distance is ~0.4 of the face width, eyes ~1/3 down.
                out.append(((cx - 1.25 * d, cy - 0.9 * d, cx + 1.25 * d, cy + 1.9 * d), 0.5))
        return out


def _downscale(cv2: Any, gray: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Gray image shrunk so its longer side is at most max_side, histogram-equalised."""
    scale = min(1.0, max_side / max(gray.shape[:2]))
    if scale < 1.0:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.equalizeHist(gray), scale


def _centre_weighted_area(box: Sequence[float], width: int, height: int) -> float:
    """Area discounted by the distance of the box centre from the image centre."""
    x0, y0, x1, y1 = box
    dist = math.hypot((x0 + x1 - width) / 2 / width, (y0 + y1 - height) / 2 / height)
    return (x1 - x0) * (y1 - y0) * max(0.05, 1.0 - 1.5 * dist)


_local = threading.local()


def _detector_for_thread(config: DetectorConfig) -> Detector:
    # CascadeClassifier is not safe to share between threads; one per thread is cheap.
    cached: Detector | None = getattr(_local, "detector", None)
    if cached is None or cached.config != config:
        cached = _local.detector = Detector(config)
    return cached


def _detect_path(path: str, config: DetectorConfig) -> tuple[Box, float] | None:
    from fastmask.loader import decode

    try:
        image = decode(path)
    except DecodeError as err:
        # The index only sniffs magic bytes; a truncated file is no face, not a failed run.
        log.warning("faces: %s not decoded (%s); recorded as no face", path, err)
        return None
    return _detector_for_thread(config).detect(image)


# ---------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------


def _image_paths(data: str | Path, lenient: bool) -> tuple[list[str], list[str]]:
    train = D.build_index(data, lenient=lenient).frame["path"].astype(str).tolist()
    root = Path(data)
    has_eval = (root / "eval" / "info.csv").exists() or (root / "info.csv").exists()
    evals = D.read_eval(data, lenient=lenient)["path"].astype(str).tolist() if has_eval else []
    return train, evals


def fingerprint(paths: Sequence[str], config: DetectorConfig) -> str:
    """Hash of the detector settings and every path with its size and mtime."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, asdict(config)], sort_keys=True).encode())
    for p in sorted(set(paths)):
        st = os.stat(p)
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _cache_is_current(csv_path: Path, meta_path: Path, print_: str) -> bool:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    return csv_path.exists() and meta.get("fingerprint") == print_


def detect_faces(
    data: str | Path,
    *,
    detector: str = DEFAULT_DETECTOR,
    workers: int | None = None,
    out: str | Path | None = None,
    force: bool = False,
    lenient: bool = False,
    grid: bool = True,
) -> Path:
    """Detect one face per train and eval image of DATA into faces.csv; return its path."""
    if detector not in DETECTORS:
        raise D.DataError(f"unknown detector {detector!r}; choose from {', '.join(DETECTORS)}")
    config = DETECTORS[detector]
    csv_path = Path(out) if out is not None else Path(data) / "faces.csv"
    meta_path = csv_path.with_name(csv_path.name + ".json")
    train, evals = _image_paths(data, lenient)
    paths = list(dict.fromkeys(train + evals))
    print_ = fingerprint(paths, config)
    if not force and _cache_is_current(csv_path, meta_path, print_):
        log.info("faces: %s is up to date (%d images, detector %s)", csv_path, len(paths), detector)
        return csv_path

    workers = workers or min(8, os.cpu_count() or 1)
    # cv2's bootstrap import is not thread-safe: import it (and check the cascades) here first.
    Detector(config)
    start = time.perf_counter()
    # OpenCV's cascade and the native decoder release the GIL, so threads run in parallel.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda p: _detect_path(p, config), paths))
    seconds = time.perf_counter() - start
    rows: list[dict[str, object]] = []
    for path, found in zip(paths, results, strict=True):
        if found is None:
            rows.append({"path": path})
            continue
        box, score = found
        x0, y0, x1, y1 = (round(float(v), 1) for v in box)
        rows.append({"path": path, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "score": score})
    frame = pd.DataFrame(rows, columns=CSV_COLUMNS)
    write_csv_atomic(frame, csv_path)
    meta = {"version": CACHE_VERSION, "fingerprint": print_, "detector": asdict(config)}
    write_text_atomic(meta_path, json.dumps(meta, indent=1))

    got = dict(zip(paths, (r is not None for r in results), strict=True))
    n_train, n_eval = sum(got[p] for p in train), sum(got[p] for p in evals)
    log.info(
        "faces: %d/%d train and %d/%d eval images got a face (detector %s); "
        "%.1f images/s with %d workers -> %s",
        n_train,
        len(train),
        n_eval,
        len(evals),
        detector,
        len(paths) / max(seconds, 1e-9),
        workers,
        csv_path,
    )
    if grid:
        write_grid(frame, csv_path.with_name("faces_grid.png"))
    return csv_path


def write_grid(
    frame: pd.DataFrame, path: Path, count: int = 24, margin: float = DEFAULT_MARGIN
) -> Path:
    """A grid of face crops (margin included; centre crops marked 'no face') to eyeball."""
    from fastmask.loader import decode
    from fastmask.plots import pyplot, save_figure

    chosen = frame.iloc[np.linspace(0, len(frame) - 1, min(count, len(frame))).astype(int)]
    plt = pyplot()
    cols = 6
    rows = max(1, math.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, rows * 2.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, chosen.itertuples(index=False), strict=False):
        image = decode(row.path)
        h, w = image.shape[:2]
        if pd.isna(row.x0):
            side = min(h, w)
            box: Box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            title = "no face"
        else:
            box = expand_box((row.x0, row.y0, row.x1, row.y1), margin, w, h)
            title = f"score {row.score:g}"
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        ax.imshow(image[y0:y1, x0:x1])
        name = f"{Path(row.path).parent.name[:10]}/{Path(row.path).stem[:14]}"
        ax.set_title(f"{name}\n{title}", fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add the `faces` command to the CLI's subparsers."""
    p = sub.add_parser(
        "faces",
        help="detect one face box per train/eval image and cache them in faces.csv",
        description=(
            "Detect one face per image of DATA/train and DATA/eval with OpenCV Haar cascades, "
            "write DATA/faces.csv (path,x0,y0,x1,y1,score) and faces_grid.png beside it. "
            "The result is reused while the images and detector settings are unchanged."
        ),
    )
    p.add_argument("data", metavar="DATA", help="data folder holding train/ (and eval/)")
    p.add_argument(
        "--detector",
        choices=sorted(DETECTORS),
        default=DEFAULT_DETECTOR,
        help=f"face detector (default: {DEFAULT_DETECTOR})",
    )
    p.add_argument("--workers", type=int, default=None, metavar="N", help="detection threads")
    p.add_argument(
        "--out", default=None, metavar="FILE", help="cache file (default DATA/faces.csv)"
    )
    p.add_argument("--force", action="store_true", help="recompute even when the cache is current")
    p.add_argument("--lenient", action="store_true", help="skip broken items with a warning")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    detect_faces(
        args.data,
        detector=args.detector,
        workers=args.workers,
        out=args.out,
        force=args.force,
        lenient=args.lenient,
    )
    return 0
