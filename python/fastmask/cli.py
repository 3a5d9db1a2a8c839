"""Command line entry point: `python -m fastmask <command>`.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func` to the function that runs it. Modules import torch lazily so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastmask import DecodeError, __version__
from fastmask.errors import FastmaskError, Interrupted

# Order here is the order in `--help`; a module is listed once its command works.
COMMAND_MODULES = [
    "fastmask.synth",
    "fastmask.eda",
    "fastmask.check",
    "fastmask.bench",
    "fastmask.train",
    "fastmask.run",
    "fastmask.leaderboard",
    "fastmask.suspects",
    "fastmask.report",
    "fastmask.predict",
    "fastmask.combine",
    "fastmask.evaluate",
    "fastmask.export",
    "fastmask.classify",
    "fastmask.faces",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastmask",
        description="Train and ship mask / gender / age classifiers fed by a parallel Rust loader.",
    )
    parser.add_argument("--version", action="version", version=f"fastmask {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def same_command(argv: list[str] | None) -> str:
    return shlex.join(["python", "-m", "fastmask", *(argv or sys.argv[1:])])


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, `kill`) ends a command as Ctrl-C does, with the command
    to continue, not silently. Training installs its own graceful handler inside."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except Interrupted as err:
        again = err.command or same_command(argv)
        print(f"interrupted ({err}); resume with:\n  {again}", file=sys.stderr)
        return 130
    except KeyboardInterrupt as err:
        # Outside a training step (predicting, scoring) or a second signal: every output is
        # written atomically, so what is on disk is whole; `run` continues where it stopped.
        why = f" ({err})" if str(err) else ""
        print(f"interrupted{why}; run again with:\n  {same_command(argv)}", file=sys.stderr)
        return 128 + signal.SIGTERM if str(err) == "SIGTERM" else 130
    except (FastmaskError, DecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
