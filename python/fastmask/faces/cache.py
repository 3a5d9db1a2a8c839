"""faces.csv: one face per image, detected once and cached beside the data.

Boxes and landmarks are in pixel coordinates of the image after EXIF orientation, exactly as
the native loader decodes it. The cache is `DATA/faces.csv` (CSV_COLUMNS; every field but
`path` empty when no face, landmark fields empty when the detector gives none) with a sidecar
`faces.csv.json` fingerprint; it is reused while that matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from fastmask import DecodeError
from fastmask import data as D
from fastmask.faces.detectors import (
    DEFAULT_DETECTOR,
    Detector,
    DetectorConfig,
    get_config,
    make_detector,
)
from fastmask.faces.mtcnn import MtcnnConfig
from fastmask.faces.types import LANDMARK_NAMES, Box, Face
from fastmask.files import write_csv_atomic, write_text_atomic

log = logging.getLogger(__name__)

BOX_COLUMNS = ["path", "x0", "y0", "x1", "y1", "score"]
LANDMARK_COLUMNS = [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]
CSV_COLUMNS = BOX_COLUMNS + LANDMARK_COLUMNS
CACHE_VERSION = 2
DEFAULT_MARGIN = 0.3


def load_face_boxes(csv_path: str | Path) -> dict[str, Box | None]:
    """Read a faces.csv into {path: (x0, y0, x1, y1) or None when no face was found}.

    Keys are the path strings exactly as `build_index` / `read_eval` produce them.
    """
    frame = _read_faces_csv(csv_path)
    boxes, _ = _boxes(frame, csv_path)
    return dict(zip(frame["path"].astype(str), boxes, strict=True))


def _boxes(frame: pd.DataFrame, csv_path: str | Path) -> tuple[list[Box | None], pd.Series]:
    """Per row the box (None: no face) and the score (NaN where empty), both checked."""
    missing = [c for c in BOX_COLUMNS if c not in frame.columns]
    if missing:
        raise D.DataError(f"{csv_path}: missing column(s) {', '.join(missing)}")
    scores = _numbers(frame, ["score"], csv_path)["score"]
    coords = _numbers(frame, BOX_COLUMNS[1:5], csv_path)
    empty = coords.isna()
    partial = empty.any(axis=1) & ~empty.all(axis=1)
    if partial.any():
        i = int(np.flatnonzero(partial)[0])
        raise D.DataError(
            f"{csv_path}: line {i + 2}: the box (x0, y0, x1, y1) is partly empty "
            f"({', '.join(map(str, coords.iloc[i]))}): give all four or none (no face)"
        )
    boxes: list[Box | None] = [
        None if pd.isna(x0) else (float(x0), float(y0), float(x1), float(y1))
        for x0, y0, x1, y1 in coords.itertuples(index=False)
    ]
    return boxes, scores


def _numbers(frame: pd.DataFrame, columns: Sequence[str], csv_path: str | Path) -> pd.DataFrame:
    """The columns as floats (NaN where empty); a value that is not a finite number is named."""
    out = {}
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce").astype(float)
        bad = (values.isna() & frame[column].notna()) | np.isinf(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raw = frame[column].iloc[i]
            shown = repr(raw) if isinstance(raw, str) else str(float(raw))
            raise D.DataError(
                f"{csv_path}: line {i + 2}, {column} = {shown}: expected a finite number "
                "(or an empty field: no face)"
            )
        out[column] = values
    return pd.DataFrame(out)


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


def _read_faces_csv(csv_path: str | Path) -> pd.DataFrame:
    try:
        return pd.read_csv(csv_path, dtype={"path": str})
    except (OSError, ValueError) as err:
        raise D.DataError(f"{csv_path}: cannot read the faces file ({err})") from err


def load_faces(csv_path: str | Path) -> dict[str, Face | None]:
    """Read a faces.csv into {path: Face (landmarks None where absent) or None}.

    Reads files written before the landmark columns existed (they give no landmarks).
    """
    frame = _read_faces_csv(csv_path)
    boxes, scores = _boxes(frame, csv_path)
    has_landmarks = all(c in frame.columns for c in LANDMARK_COLUMNS)
    points = _numbers(frame, LANDMARK_COLUMNS, csv_path).to_numpy() if has_landmarks else None
    out: dict[str, Face | None] = {}
    for i, (path, box) in enumerate(zip(frame["path"].astype(str), boxes, strict=True)):
        if box is None:
            out[path] = None
            continue
        landmarks = None
        if points is not None and not np.isnan(points[i]).any():
            xy = points[i].reshape(-1, 2)
            landmarks = tuple((float(x), float(y)) for x, y in xy)
        score = float(scores.iloc[i]) if not pd.isna(scores.iloc[i]) else 0.0
        out[path] = Face(box, score, landmarks)
    return out


_local = threading.local()


def _haar_for_thread(config: DetectorConfig) -> Detector:
    # OpenCV's cascades are not safe to share between threads; one per thread is cheap.
    cached: Detector | None = getattr(_local, "detector", None)
    if cached is None or cached.config != config:
        cached = _local.detector = make_detector(config)
    return cached


def _decode(path: str) -> np.ndarray | None:
    from fastmask.loader import decode

    try:
        return decode(path)
    except DecodeError as err:
        # The index only sniffs magic bytes; a truncated file is no face, not a failed run.
        log.warning("faces: %s not decoded (%s); recorded as no face", path, err)
        return None


def _detect_one(path: str, config: DetectorConfig) -> Face | None:
    image = _decode(path)
    return None if image is None else _haar_for_thread(config).detect(image)


def detect_paths(
    paths: Sequence[str], config: DetectorConfig | str = DEFAULT_DETECTOR, workers: int = 2
) -> list[Face | None]:
    """One face (or None) per image file, decoded as the loader decodes it.

    Haar: each thread decodes and detects one image. MTCNN: each thread decodes and detects a
    batch of images (the nets run on the whole batch at once).
    """
    if isinstance(config, str):
        config = get_config(config)
    if not isinstance(config, MtcnnConfig):
        # cv2's bootstrap import is not thread-safe: import it (and check the cascades) first.
        make_detector(config)
        # OpenCV's cascade and the native decoder release the GIL, so threads run in parallel.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda p: _detect_one(p, config), paths))
    import torch

    detector = make_detector(config)
    batch = config.batch_size

    def chunk(start: int) -> list[Face | None]:
        images = [_decode(p) for p in paths[start : start + batch]]
        found = iter(detector.detect_batch([im for im in images if im is not None]))
        return [None if im is None else next(found) for im in images]

    # One torch thread per worker, each on its own batch: torch's own threads spin against
    # each other and the decoders on a few cores, and its small convolutions scale poorly.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = pool.map(chunk, range(0, len(paths), batch))
            return [face for part in parts for face in part]
    finally:
        torch.set_num_threads(threads)


def _image_paths(data: str | Path, lenient: bool) -> tuple[list[str], list[str]]:
    train = D.build_index(data, lenient=lenient).frame["path"].astype(str).tolist()
    root = Path(data)
    has_eval = (root / "eval" / "info.csv").exists() or (root / "info.csv").exists()
    evals = D.read_eval(data, lenient=lenient)["path"].astype(str).tolist() if has_eval else []
    return train, evals


def fingerprint(paths: Sequence[str], config: DetectorConfig) -> str:
    """Hash of the detector settings (and weights version) and every path's size and mtime."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, config.identity()], sort_keys=True).encode())
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


def as_written(face: Face | None) -> Face | None:
    """The face as faces.csv keeps it (pixels to 0.1, score to 4 places): what `train` and
    `predict` crop to, so `classify` frames a face it detects through this too."""
    if face is None:
        return None
    x0, y0, x1, y1 = (round(float(v), 1) for v in face.box)
    points = face.landmarks
    if points is not None:
        points = tuple((round(float(x), 1), round(float(y), 1)) for x, y in points)
    return Face((x0, y0, x1, y1), round(float(face.score), 4), points)


def face_rows(paths: Sequence[str], found: Sequence[Face | None]) -> pd.DataFrame:
    """The faces.csv table: one row per path, empty fields where there is no face/landmark."""
    rows: list[dict[str, object]] = []
    for path, found_face in zip(paths, found, strict=True):
        row: dict[str, object] = {"path": path}
        face = as_written(found_face)
        if face is not None:
            x0, y0, x1, y1 = face.box
            row.update(x0=x0, y0=y0, x1=x1, y1=y1, score=face.score)
            for name, (x, y) in zip(LANDMARK_NAMES, face.landmarks or (), strict=False):
                row[f"{name}_x"], row[f"{name}_y"] = x, y
        rows.append(row)
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


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
    """Detect one face per train and eval image of DATA into faces.csv; return its path.

    workers: detection threads; None or 0 for all cores (at most 8)."""
    if workers is not None and workers < 0:
        raise D.DataError(f"faces: workers must be >= 0, got {workers}")
    config = get_config(detector)
    csv_path = Path(out) if out is not None else Path(data) / "faces.csv"
    meta_path = csv_path.with_name(csv_path.name + ".json")
    train, evals = _image_paths(data, lenient)
    paths = list(dict.fromkeys(train + evals))
    print_ = fingerprint(paths, config)
    if not force and _cache_is_current(csv_path, meta_path, print_):
        log.info("faces: %s is up to date (%d images, detector %s)", csv_path, len(paths), detector)
        return csv_path

    workers = workers or min(8, os.cpu_count() or 1)
    start = time.perf_counter()
    results = detect_paths(paths, config, workers)
    seconds = time.perf_counter() - start
    frame = face_rows(paths, results)
    write_csv_atomic(frame, csv_path)
    meta = {"version": CACHE_VERSION, "fingerprint": print_, "detector": config.identity()}
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
        name = f"{Path(row.path).parent.name[:10]}/{Path(row.path).stem[:14]}"
        try:
            image = decode(row.path)
        except DecodeError:  # detection recorded it as no face and warned; so does the sheet
            ax.set_title(f"{name}\nnot decoded", fontsize=6)
            continue
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
        ax.set_title(f"{name}\n{title}", fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)
