"""The eyes-level face crop (`--crop face-aligned`): a face box turned so the eyes are level.

Coordinates are continuous image coordinates, as faces.csv boxes are: pixel (i, j) covers
[i, i+1) x [j, j+1), so `image[y0:y1, x0:x1]` is the plain crop of box (x0, y0, x1, y1).

What a loader needs per image is an `Alignment`: the crop is the rectangle of `size` centred
on `centre`, its x axis turned by `angle` degrees from the image's x axis (towards +y, so
clockwise as seen). `crop_matrix` turns it into the 2 x 3 affine map from output pixels to
source pixels; `aligned_crop` is the reference implementation with OpenCV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fastmask.faces.types import as_rgb

Point = tuple[float, float]


@dataclass(frozen=True)
class Alignment:
    """A turned crop rectangle: centre (x, y), size (width, height), angle in degrees."""

    centre: Point
    size: tuple[float, float]
    angle: float


def eye_angle(left_eye: Sequence[float], right_eye: Sequence[float]) -> float:
    """Angle in degrees of the line from the left to the right eye (as seen), +y down."""
    dx, dy = float(right_eye[0]) - float(left_eye[0]), float(right_eye[1]) - float(left_eye[1])
    if dx == 0 and dy == 0:
        return 0.0
    return math.degrees(math.atan2(dy, dx))


def alignment(
    box: Sequence[float],
    left_eye: Sequence[float],
    right_eye: Sequence[float],
    margin: float = 0.0,
) -> Alignment:
    """The crop of `box` grown by `margin` of its size on each side (as `expand_box`), about
    the box centre, turned so the eye line becomes horizontal."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"face box {tuple(box)} is empty")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    scale = 1.0 + 2.0 * margin
    return Alignment(
        centre=((x0 + x1) / 2, (y0 + y1) / 2),
        size=((x1 - x0) * scale, (y1 - y0) * scale),
        angle=eye_angle(left_eye, right_eye),
    )


def crop_matrix(align: Alignment, out_size: tuple[int, int]) -> np.ndarray:
    """2 x 3 float64 matrix M: output pixel (u, v) samples source pixel M @ (u, v, 1).

    Both in OpenCV's pixel-centre convention, so `cv2.warpAffine(image, M, out_size,
    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)` draws the crop. out_size is (width, height).
    """
    out_w, out_h = out_size
    if out_w < 1 or out_h < 1:
        raise ValueError(f"out_size must be positive, got {out_size}")
    (cx, cy), (w, h) = align.centre, align.size
    cos, sin = math.cos(math.radians(align.angle)), math.sin(math.radians(align.angle))
    kx, ky = w / out_w, h / out_h
    # Output pixel centre (u + 0.5) * k - size / 2 in the crop frame, turned, moved to the
    # centre, then -0.5 back to the source's pixel-centre convention.
    ox, oy = 0.5 * kx - w / 2, 0.5 * ky - h / 2
    return np.array(
        [
            [cos * kx, -sin * ky, cx - 0.5 + cos * ox - sin * oy],
            [sin * kx, cos * ky, cy - 0.5 + sin * ox + cos * oy],
        ]
    )


def aligned_crop(
    image: np.ndarray,
    box: Sequence[float],
    landmarks: Sequence[Sequence[float]],
    margin: float = 0.3,
    out_size: tuple[int, int] = (224, 224),
) -> np.ndarray:
    """The face of `box` with its eyes level, `margin` of the box added on each side, resized
    to out_size (width, height). landmarks: the left and right eye first (faces.csv order).
    Where the turned rectangle leaves the image, the edge pixels are repeated."""
    import cv2

    image = as_rgb(image)
    if len(landmarks) < 2:
        raise ValueError(f"need the two eye landmarks, got {landmarks}")
    matrix = crop_matrix(alignment(box, landmarks[0], landmarks[1], margin), out_size)
    return cv2.warpAffine(
        image,
        matrix,
        (int(out_size[0]), int(out_size[1])),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
