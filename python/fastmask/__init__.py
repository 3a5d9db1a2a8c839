"""fastmask: train and ship face-image classifiers fed by a parallel Rust data loader."""

from fastmask._native import DecodeError, __version__
from fastmask.errors import DataError, FastmaskError

__all__ = ["DataError", "DecodeError", "FastmaskError", "__version__"]
