"""fastmask: train and ship face-image classifiers fed by a parallel Rust data loader."""

from fastmask._native import __version__

__all__ = ["__version__"]
