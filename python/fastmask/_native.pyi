"""Type stub of the native module (rust/lib.rs); kept honest by mypy's stubtest.

Image sizes are (height, width) everywhere, as in numpy shapes and `Loader(image_size=...)`.
"""

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any, TypeAlias, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "AUGMENT_KNOBS",
    "EVAL_CROP",
    "PRESETS",
    "AugmentConfig",
    "DecodeError",
    "Pipeline",
    "__version__",
    "augment_image",
    "build_info",
    "check_images",
    "decode_file",
    "epoch_plan",
]
# (x0, y0, x1, y1), or (x0, y0, x1, y1, angle_deg): that box turned about its centre.
_CropBox: TypeAlias = tuple[float, float, float, float] | tuple[float, float, float, float, float]

__version__: str
PRESETS: tuple[str, ...]
AUGMENT_KNOBS: tuple[str, ...]
EVAL_CROP: dict[str, Any]

class DecodeError(ValueError):
    """An image file could not be read or decoded; the message names it."""

@final
class AugmentConfig:
    """A preset plus explicit knobs; a knob left out or None keeps the preset's value."""

    def __new__(
        cls, preset: str = "none", **knobs: float | tuple[float, float] | None
    ) -> AugmentConfig: ...
    @property
    def preset(self) -> str: ...
    def knobs(self) -> dict[str, Any]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    @property
    def center_crop(self) -> tuple[float, float]: ...
    @property
    def center_offset_y(self) -> float: ...
    @property
    def rrc_scale(self) -> tuple[float, float]: ...
    @property
    def rrc_ratio(self) -> tuple[float, float]: ...
    @property
    def rrc_p(self) -> float: ...
    @property
    def hflip_p(self) -> float: ...
    @property
    def rotate_deg(self) -> float: ...
    @property
    def rotate_p(self) -> float: ...
    @property
    def brightness(self) -> float: ...
    @property
    def contrast(self) -> float: ...
    @property
    def saturation(self) -> float: ...
    @property
    def hue(self) -> float: ...
    @property
    def jitter_p(self) -> float: ...
    @property
    def grayscale_p(self) -> float: ...
    @property
    def noise_std(self) -> float: ...
    @property
    def noise_p(self) -> float: ...
    @property
    def erase_p(self) -> float: ...
    @property
    def erase_scale(self) -> tuple[float, float]: ...
    @property
    def erase_ratio(self) -> tuple[float, float]: ...
    @property
    def mask_aug_p(self) -> float: ...
    @property
    def mask_aug_strength(self) -> float: ...

def build_info() -> dict[str, Any]: ...
def check_images(
    paths: Sequence[str | PathLike[str]],
    *,
    full: bool = False,
    apply_exif: bool = True,
    threads: int = 0,
) -> list[tuple[int, int, int, int, int, str | None]]: ...
def decode_file(
    path: str | PathLike[str],
    apply_exif: bool = True,
    min_size: tuple[int, int] | None = None,
    roi: tuple[int, int, int, int] | None = None,
) -> npt.NDArray[np.uint8]: ...
def augment_image(
    image: npt.NDArray[np.uint8],
    image_size: tuple[int, int],
    *,
    train: bool = False,
    seed: int = 0,
    preset: str = "none",
    knobs: Mapping[str, Any] | None = None,
    crop: _CropBox | None = None,
) -> npt.NDArray[np.uint8]: ...
def epoch_plan(
    labels: Sequence[int],
    *,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    oversample: str | Mapping[int, float] | None = None,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    batch_size: int = 1,
) -> list[int]: ...

@final
class Pipeline:
    def __new__(
        cls,
        paths: Sequence[str | PathLike[str]],
        labels: Sequence[int] | None,
        boxes: Sequence[_CropBox | None] | None,
        *,
        batch_size: int,
        image_size: tuple[int, int],
        threads: int,
        train: bool,
        augment: AugmentConfig,
        shuffle: bool,
        oversample: str | Mapping[int, float] | None,
        seed: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        ring: int,
        cache: bool,
        cache_bytes: int | None,
        apply_exif: bool,
        skip_errors: bool,
        normalize: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None,
    ) -> Pipeline: ...
    def set_slot(
        self, index: int, images: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64]
    ) -> None: ...
    def start_epoch(self, epoch: int) -> int: ...
    def schedule(self, batch: int, slot: int) -> None: ...
    def wait(self, batch: int) -> int: ...
    def cancel(self) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def num_batches(self) -> int: ...
    @property
    def plan_len(self) -> int: ...
    @property
    def cache_bytes_used(self) -> int: ...
    def take_skipped(self) -> list[str]: ...
