"""argparse value types shared by the commands: counts that must not go below a minimum."""

from __future__ import annotations

import argparse


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A count of at least 1 (batch size, how many to show)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """A count of at least 0 (threads, where 0 lets the loader pick)."""
    return _int_at_least(text, 0)
