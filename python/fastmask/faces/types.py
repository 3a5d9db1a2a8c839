"""What every face detector returns: one box, its score and, where the model gives them, the
five landmarks. Shared by the detectors, the faces.csv cache and the aligned crop."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]
Point = tuple[float, float]
# Order of the five landmarks, sides as seen in the image (le = the eye with the smaller x on an
# upright face, which is the person's right eye).
LANDMARK_NAMES = ("le", "re", "nose", "lm", "rm")


@dataclass(frozen=True)
class Face:
    """A face box (x0, y0, x1, y1) in image pixels, a score, and landmarks (5 x (x, y)) or None."""

    box: Box
    score: float
    landmarks: tuple[Point, ...] | None = None

    def __post_init__(self) -> None:
        if self.landmarks is not None and len(self.landmarks) != len(LANDMARK_NAMES):
            raise ValueError(f"a face has {len(LANDMARK_NAMES)} landmarks, got {self.landmarks}")


def centre_weighted_area(box: Sequence[float], width: int, height: int) -> float:
    """Area discounted by the distance of the box centre from the image centre."""
    x0, y0, x1, y1 = box
    dist = math.hypot((x0 + x1 - width) / 2 / width, (y0 + y1 - height) / 2 / height)
    return (x1 - x0) * (y1 - y0) * max(0.05, 1.0 - 1.5 * dist)


def pick_face(faces: Sequence[Face], width: int, height: int) -> Face | None:
    """The face a crop should use: the largest near the image centre, clamped to the image."""
    if not faces:
        return None
    best = max(faces, key=lambda f: centre_weighted_area(f.box, width, height))
    x0, y0, x1, y1 = best.box
    box = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
    return Face(box, best.score, best.landmarks)


def as_rgb(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Check an HxWx3 uint8 array (what a detector takes) and make it contiguous."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{what}: expected an HxWx3 uint8 RGB array, got {image.dtype} {image.shape}"
        )
    return np.ascontiguousarray(image)
