"""Exceptions users can catch. Each message names the file or value and what was expected."""

from __future__ import annotations


class FastmaskError(Exception):
    """Base class of fastmask's own errors; the CLI prints these without a traceback."""


class DataError(FastmaskError, ValueError):
    """The data set does not match the layout described in DATASET.md."""
