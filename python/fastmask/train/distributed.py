"""Where a training process runs: torchrun's rank, world size and device."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastmask.errors import FastmaskError

if TYPE_CHECKING:
    import torch


@dataclass
class Context:
    """Where this process runs: rank, world size and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    # Started by torchrun: a process group (and DDP) even for one process, so that
    # `torchrun --nproc_per_node 1` on a one-GPU machine runs the code of a multi-GPU run.
    launched: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.launched


def setup_context(device: str) -> Context:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; start the process group under torchrun
    (any world size) or when WORLD_SIZE > 1."""
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FastmaskError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is None:  # plain "cuda": each torchrun rank its own GPU, as "auto" does
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    ctx = Context(rank, world_size, local_rank, dev, launched="TORCHELASTIC_RUN_ID" in os.environ)
    if ctx.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return ctx


def all_gather(obj: Any, ctx: Context) -> list[Any]:
    """Every rank's `obj`, in rank order (just [obj] without DDP)."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
