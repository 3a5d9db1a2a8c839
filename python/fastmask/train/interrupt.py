"""Graceful stop: SIGINT or SIGTERM sets a flag that the loop reads at each batch boundary,
where it saves a checkpoint it can resume from mid-epoch; a second signal stops at once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from fastmask.train.distributed import Context

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set by a signal handler (or `request`); read by the loop between batches."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.requested_at: float | None = None

    def request(self, name: str) -> None:
        self.signal_name = name
        self.requested_at = time.monotonic()

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def agreed(self, ctx: Context) -> bool:
        """True when any rank was asked to stop, so every rank stops at the same batch."""
        if not ctx.distributed:
            return bool(self)
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self else 0.0], device=ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and not self:
            self.request("stop on another rank")
        return bool(flag.item())


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install SIGINT/SIGTERM handlers for the block (main thread only), restored after."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop:
            raise KeyboardInterrupt(f"second {name}: stopping without a checkpoint")
        stop.request(name)
        log.warning("%s: saving a checkpoint at the next batch boundary (again: stop now)", name)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
