"""The face detectors `fastmask faces --detector` offers, by name, and how to build one."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fastmask.errors import DataError
from fastmask.faces.haar import HAAR_DETECTORS, HaarConfig, HaarDetector
from fastmask.faces.mtcnn import MtcnnConfig, MtcnnDetector
from fastmask.faces.types import Face

DetectorConfig = HaarConfig | MtcnnConfig

DETECTORS: dict[str, DetectorConfig] = {"mtcnn": MtcnnConfig(), **HAAR_DETECTORS}
DEFAULT_DETECTOR = "mtcnn"


class Detector(Protocol):
    @property
    def config(self) -> DetectorConfig: ...

    def detect(self, image: np.ndarray) -> Face | None: ...

    def detect_batch(self, images: list[np.ndarray]) -> list[Face | None]: ...


def get_config(name: str) -> DetectorConfig:
    if name not in DETECTORS:
        raise DataError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    return DETECTORS[name]


def make_detector(config: DetectorConfig | str = DEFAULT_DETECTOR) -> Detector:
    """A detector for a config or a name of DETECTORS."""
    if isinstance(config, str):
        config = get_config(config)
    if isinstance(config, MtcnnConfig):
        return MtcnnDetector(config)
    return HaarDetector(config)
