"""Atomic output: every file fastmask writes goes to a temp name beside it, then os.replace,
so a reader (or a crash) never sees half a file and an old result is never lost to a failure.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from fastmask.errors import WriteError

if TYPE_CHECKING:
    import pandas as pd


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on failure it is removed.

    An OSError while writing (ENOSPC, EACCES, ...) becomes a WriteError naming `path`; the
    previous file, if any, is left as it was.
    """
    path = Path(path)
    # A plain name (not mkstemp) so the file gets the umask's mode, like any other output.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        yield tmp
        os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as err:
        reason = err.strerror or str(err)
        raise WriteError(f"cannot write {path}: {reason} (the previous file is unchanged)") from err
    finally:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


# Another process's temp file is only taken for stale this long after its last write: its pid
# may belong to another machine or container sharing the folder, where it looks dead from here.
STALE_TEMP_S = 3600.0


def remove_stale_temps(path: Path) -> None:
    """Remove the temp files of `path` that killed writers left (kill -9, power loss): one with
    our own pid (a crashed process that had it), and others whose process is gone here and
    that nobody wrote to for an hour."""
    now = time.time()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -len(".tmp")]
        if not pid.isdigit():
            continue
        with suppress(OSError):
            if int(pid) == os.getpid() or (
                not _alive(int(pid)) and now - tmp.stat().st_mtime > STALE_TEMP_S
            ):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def output_dir(path: str | Path) -> Path:
    """Make the folder `path` (and its parents) for outputs; a WriteError names it if it cannot
    be one (a file of that name, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = err.strerror or str(err)
        raise WriteError(f"cannot make output folder {path}: {reason}") from err
    return path


def write_with(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(temp_path)`, then move the result into place."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_with(path, lambda tmp: tmp.write_text(text))


def write_csv_atomic(frame: pd.DataFrame, path: str | Path) -> Path:
    return write_with(path, lambda tmp: frame.to_csv(tmp, index=False))
