"""Small plotting helpers shared by the commands that write figures (eda, report).

matplotlib is imported lazily inside these functions so `python -m fastmask --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

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
