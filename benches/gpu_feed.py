"""Does the GPU wait for data? EfficientNet-B0 training steps (AMP bf16, channels_last) fed by

  (1) random tensors already on the GPU          -- the ceiling, no data loading at all
  (2) fastmask's native loader (device="cuda")   -- pinned ring, non_blocking copies
  (3) torchvision DataLoader + PIL, N workers    -- the pipeline users run today

on the same synthetic images, with the same augmentation work (centre crop, resize to 224,
flip, colour jitter, normalise). Prints images/s, mean GPU utilisation and the ratios.

    python benches/gpu_feed.py --data DIR [--steps 60] [--threads N] [--json FILE]

Needs a CUDA GPU; writes a synthetic data set first when --data does not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class GpuUtil:
    """Samples nvidia-smi's utilization.gpu every 100 ms while active."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuUtil:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5,
                )  # fmt: skip
                self.samples.append(float(out.stdout.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.1)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else float("nan")


def train_steps(model: Any, opt: Any, batches: Any, steps: int, warmup: int) -> tuple[float, float]:
    """Run warmup + steps training steps; returns (images/s, mean GPU utilisation)."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    it = iter(batches)

    def step() -> int:
        nonlocal it
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(batches)
            x, y = next(it)
        x = x.cuda(non_blocking=True)
        y = y.cuda(non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.float()
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return int(x.shape[0])

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    with GpuUtil() as util:
        t0 = time.perf_counter()
        n = sum(step() for _ in range(steps))
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    return n / dt, util.mean


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="/tmp/gpu_feed_data")
    ap.add_argument("--people", type=int, default=400, help="synthetic people if --data is new")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch
    import torchvision

    from fastmask.bench import _fastmask_config, _torchvision_loader
    from fastmask.data import build_index
    from fastmask.loader import REFERENCE_MEAN, REFERENCE_STD, Loader, default_threads
    from fastmask.synth import write_synthetic

    if not torch.cuda.is_available():
        print("gpu_feed needs a CUDA GPU", file=sys.stderr)
        return 2
    threads = args.threads or default_threads()
    if not Path(args.data, "train").exists():
        t0 = time.perf_counter()
        write_synthetic(args.data, people=args.people, eval_people=0, seed=0, workers=threads)
        print(f"synth: {args.people} people in {time.perf_counter() - t0:.1f}s")
    frame = build_index(args.data).frame
    paths = frame[frame["ext"].isin([".jpg", ".jpeg"])]["path"].tolist()
    labels = [i % 1000 for i in range(len(paths))]
    torch.backends.cudnn.benchmark = True

    def fresh_model() -> tuple[Any, Any]:
        torch.manual_seed(0)
        model = torchvision.models.efficientnet_b0(weights=None).cuda()
        model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.Adam(model.parameters(), lr=1e-4)

    results: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "threads": threads,
        "images": len(paths),
        "batch_size": args.batch_size,
        "steps": args.steps,
    }
    bs = args.batch_size
    mean = torch.tensor(REFERENCE_MEAN, device="cuda").view(1, 3, 1, 1)
    std = torch.tensor(REFERENCE_STD, device="cuda").view(1, 3, 1, 1)

    class Ceiling:
        """The same batch, already normalised on the GPU, forever."""

        def __iter__(self) -> Any:
            x = (torch.rand(bs, 3, 224, 224, device="cuda") - mean) / std
            y = torch.randint(0, 1000, (bs,), device="cuda")
            while True:
                yield x, y

    model, opt = fresh_model()
    results["ceiling"], results["ceiling_util"] = train_steps(
        model, opt, Ceiling(), args.steps, args.warmup
    )
    print(f"(1) ceiling        {results['ceiling']:8.1f} img/s  GPU {results['ceiling_util']:.0f}%")

    model, opt = fresh_model()
    with Loader(paths, labels, batch_size=bs, image_size=224, augment=_fastmask_config(),
                threads=threads, device="cuda", normalize=True) as loader:  # fmt: skip
        results["fastmask"], results["fastmask_util"] = train_steps(
            model, opt, loader, args.steps, args.warmup
        )
    fm, fm_util = results["fastmask"], results["fastmask_util"]
    print(f"(2) fastmask       {fm:8.1f} img/s  GPU {fm_util:.0f}%")

    model, opt = fresh_model()
    tv = _torchvision_loader(paths, bs, threads, pin_memory=True)
    tv_labels = _Relabel(tv)
    results["torchvision_pil"], results["torchvision_pil_util"] = train_steps(
        model, opt, tv_labels, args.steps, args.warmup
    )
    print(
        f"(3) torchvision+PIL {results['torchvision_pil']:7.1f} img/s  "
        f"GPU {results['torchvision_pil_util']:.0f}%"
    )
    results["fastmask_vs_torchvision"] = results["fastmask"] / results["torchvision_pil"]
    results["fastmask_vs_ceiling"] = results["fastmask"] / results["ceiling"]
    results["torchvision_vs_ceiling"] = results["torchvision_pil"] / results["ceiling"]
    print(
        f"fastmask / torchvision = {results['fastmask_vs_torchvision']:.2f}x; "
        f"fastmask reaches {results['fastmask_vs_ceiling']:.0%} of the ceiling, "
        f"torchvision+PIL {results['torchvision_vs_ceiling']:.0%}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


class _Relabel:
    """The baseline's labels are all 0; give it the same label spread as the others."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self) -> Any:
        import torch

        for i, (x, _) in enumerate(self.loader):
            yield x, torch.arange(x.shape[0]) % 1000 + i % 7


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "disabled")
    raise SystemExit(main())
