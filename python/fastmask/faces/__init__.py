"""`fastmask faces`: one face box (and five landmarks) per image, detected once and cached in
DATA/faces.csv for `train --crop face` (and `--crop face-aligned`, which levels the eyes).

Modules: types (Face), mtcnn (the default CNN detector), haar (OpenCV cascades), detectors
(the registry), cache (faces.csv), align (eyes-level crop), photos (the real-photo test set).
"""

from __future__ import annotations

import argparse
from typing import Any

from fastmask.argtypes import non_negative_int
from fastmask.faces.align import Alignment, aligned_crop, alignment, crop_matrix
from fastmask.faces.cache import (
    BOX_COLUMNS,
    CSV_COLUMNS,
    DEFAULT_MARGIN,
    LANDMARK_COLUMNS,
    detect_faces,
    detect_paths,
    expand_box,
    fingerprint,
    load_face_boxes,
    load_faces,
    write_grid,
)
from fastmask.faces.detectors import DEFAULT_DETECTOR, DETECTORS, Detector, make_detector
from fastmask.faces.types import LANDMARK_NAMES, Box, Face

__all__ = [
    "BOX_COLUMNS",
    "CSV_COLUMNS",
    "DEFAULT_DETECTOR",
    "DEFAULT_MARGIN",
    "DETECTORS",
    "LANDMARK_COLUMNS",
    "LANDMARK_NAMES",
    "Alignment",
    "Box",
    "Detector",
    "Face",
    "aligned_crop",
    "alignment",
    "crop_matrix",
    "detect_faces",
    "detect_paths",
    "expand_box",
    "fingerprint",
    "load_face_boxes",
    "load_faces",
    "make_detector",
    "register",
    "run",
    "write_grid",
]


def register(sub: Any) -> None:
    """Add the `faces` command to the CLI's subparsers."""
    p = sub.add_parser(
        "faces",
        help="detect one face box per train/eval image and cache them in faces.csv",
        description=(
            "Detect one face per image of DATA/train and DATA/eval (default: the MTCNN CNN "
            "detector, on the CPU), write DATA/faces.csv (path,x0,y0,x1,y1,score and five "
            "landmarks le,re,nose,lm,rm as _x,_y columns) and faces_grid.png beside it. "
            "The result is reused while the images and detector settings are unchanged."
        ),
    )
    p.add_argument("data", metavar="DATA", help="data folder holding train/ (and eval/)")
    p.add_argument(
        "--detector",
        choices=list(DETECTORS),
        default=DEFAULT_DETECTOR,
        help=f"face detector (default: {DEFAULT_DETECTOR}; haar* are OpenCV cascades)",
    )
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="detection threads (default, or 0: all cores, at most 8)",
    )
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
