"""OpenCV Haar cascades (weights inside opencv-python-headless): the detectors fastmask had
first, kept as `--detector haar*`. No landmarks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fastmask.errors import DataError
from fastmask.faces.types import Box, Face, as_rgb, pick_face


@dataclass(frozen=True)
class HaarConfig:
    """Everything that changes the boxes; it is part of the cache fingerprint."""

    name: str
    cascade: str
    eyes_fallback: bool
    max_side: int = 320
    scale_factor: float = 1.1
    min_neighbors: int = 3
    min_size: int = 24

    def identity(self) -> dict[str, Any]:
        """The settings, for the cache fingerprint."""
        return asdict(self)


HAAR_DETECTORS = {
    "haar": HaarConfig("haar", "haarcascade_frontalface_default.xml", False),
    "haar-alt2": HaarConfig("haar-alt2", "haarcascade_frontalface_alt2.xml", False),
    # A mask hides the nose and mouth the frontal cascade looks for; the eyes stay visible.
    "haar-eyes": HaarConfig("haar-eyes", "haarcascade_frontalface_alt2.xml", True),
}
EYES_MAX_SIDE = 320


class HaarDetector:
    """One cascade set; `detect` on RGB uint8 returns a Face (no landmarks) or None.

    Not thread-safe (OpenCV cascades): use one per thread.
    """

    def __init__(self, config: HaarConfig) -> None:
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
            raise DataError(f"OpenCV cascade for detector {config.name!r} failed to load")

    def detect(self, rgb: np.ndarray) -> Face | None:
        cv2, c = self._cv2, self.config
        height, width = rgb.shape[:2]
        full = cv2.cvtColor(as_rgb(rgb), cv2.COLOR_RGB2GRAY)
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
        return pick_face([Face(box, score) for box, score in candidates], width, height)

    def detect_batch(self, images: list[np.ndarray]) -> list[Face | None]:
        return [self.detect(image) for image in images]

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
