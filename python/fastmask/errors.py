"""Exceptions users can catch. Each message names the file or value and what was expected."""

from __future__ import annotations


class FastmaskError(Exception):
    """Base class of fastmask's own errors; the CLI prints these without a traceback."""


class DataError(FastmaskError, ValueError):
    """The data set does not match the layout described in DATASET.md."""


class WriteError(FastmaskError, OSError):
    """An output file could not be written (disk full, permission); the old file is intact."""


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint it can resume from.

    `command` is what resumes it; the CLI prints it and exits with status 130.
    """

    def __init__(self, run_dir: str, signal_name: str, command: str = "") -> None:
        super().__init__(f"{signal_name}: stopped, checkpoint saved in {run_dir}")
        self.run_dir = run_dir
        self.signal_name = signal_name
        self.command = command
