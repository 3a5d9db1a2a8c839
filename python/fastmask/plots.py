"""Small plotting helpers shared by the commands that write figures (eda, report, suspects).

matplotlib is imported lazily inside these functions so `python -m fastmask --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastmask.files import write_with

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write `fig` as a PNG through a temp name and os.replace, then close it."""
    import matplotlib.pyplot as plt

    try:
        return write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)


def upright_thumbnail(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """An RGB thumbnail fitting `size` (width, height), turned upright per EXIF as the loader
    turns the images it trains on; OSError naming the reason when the file cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            # JPEG decodes at 1/2, 1/4 or 1/8 scale directly: much faster for thumbnails.
            im.draft("RGB", size)
            upright = ImageOps.exif_transpose(im).convert("RGB")
            upright.thumbnail(size)
            return np.asarray(upright)
    except (ValueError, Image.DecompressionBombError) as err:
        raise OSError(str(err)) from err
