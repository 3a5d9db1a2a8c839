"""Does the GPU wait for data? EfficientNet-B0 training steps (AMP bf16, channels_last) fed by

  (1) random tensors already on the GPU          -- the ceiling, no data loading at all
  (2) fastmask, device="cuda", uint8             -- pinned ring, uint8 copies, normalised on
                                                    the GPU in the loader's stream
  (2b) fastmask, float32 from the workers         -- 4x the bytes, pageable copy
  (2c) fastmask, decode="gpu"                     -- nvJPEG + GPU augmentation
  (3) torchvision DataLoader + PIL, N workers    -- the pipeline users run today

on the same synthetic images, with the same augmentation work (centre crop, resize to 224,
flip, colour jitter, normalise). Prints images/s, mean GPU utilisation and the ratios.

    python benches/gpu_feed.py --data DIR [--steps 60] [--threads N] [--json FILE]
                               [--profile DIR]

Needs a CUDA GPU (--dry-run: the same cases on the CPU with a tiny model, to test the
script); writes a synthetic data set first when --data does not exist. --profile writes a
torch profiler trace of the fastmask uint8 case and prints its top operators.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
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


def train_steps(
    model: Any, opt: Any, batches: Any, steps: int, warmup: int, device: Any = "cuda"
) -> tuple[float, float]:
    """Run warmup + steps training steps; returns (images/s, mean GPU utilisation)."""
    import torch

    cuda = torch.device(device).type == "cuda"
    loss_fn = torch.nn.CrossEntropyLoss()
    it = iter(batches)

    def step() -> int:
        nonlocal it
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(batches)
            x, y = next(it)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.float()
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return int(x.shape[0])

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    with GpuUtil() as util:
        t0 = time.perf_counter()
        n = sum(step() for _ in range(steps))
        sync()
        dt = time.perf_counter() - t0
    return n / dt, util.mean


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="/tmp/gpu_feed_data")
    ap.add_argument("--people", type=int, default=400, help="synthetic people if --data is new")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", default=None, help="torch profiler trace of (2) into DIR")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny model: tests the script")
    args = ap.parse_args(argv)

    import torch
    import torchvision

    from fastmask.bench import _fastmask_config, _torchvision_loader
    from fastmask.data import build_index
    from fastmask.files import write_text_atomic
    from fastmask.gpu_decode import GpuJpegLoader
    from fastmask.loader import REFERENCE_MEAN, REFERENCE_STD, Loader, as_augment, default_threads
    from fastmask.synth import write_synthetic

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("gpu_feed needs a CUDA GPU (or --dry-run)", file=sys.stderr)
        return 2
    dev = torch.device("cpu" if dry else "cuda")
    threads = args.threads or default_threads()
    if not Path(args.data, "train").exists():
        t0 = time.perf_counter()
        write_synthetic(args.data, people=args.people, eval_people=0, seed=0, workers=threads)
        print(f"synth: {args.people} people in {time.perf_counter() - t0:.1f}s")
    frame = build_index(args.data).frame
    paths = frame[frame["ext"].isin([".jpg", ".jpeg"])]["path"].tolist()
    labels = [i % 1000 for i in range(len(paths))]
    torch.backends.cudnn.benchmark = True
    bs, size = args.batch_size, args.image_size

    def fresh_model() -> tuple[Any, Any]:
        torch.manual_seed(0)
        if dry:  # a stand-in that runs in a blink on the CPU
            model = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1),
                torch.nn.Flatten(), torch.nn.Linear(8, 1000),
            )  # fmt: skip
        else:
            model = torchvision.models.efficientnet_b0(weights=None)
        model = model.to(dev).to(memory_format=torch.channels_last)
        return model, torch.optim.Adam(model.parameters(), lr=1e-4)

    results: dict[str, Any] = {
        "gpu": "cpu-dry-run" if dry else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "threads": threads,
        "images": len(paths),
        "batch_size": bs,
        "steps": args.steps,
    }
    mean = torch.tensor(REFERENCE_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(REFERENCE_STD, device=dev).view(1, 3, 1, 1)

    class Ceiling:
        """The same batch, already normalised on the device, forever."""

        def __iter__(self) -> Any:
            x = (torch.rand(bs, 3, size, size, device=dev) - mean) / std
            y = torch.randint(0, 1000, (bs,), device=dev)
            while True:
                yield x, y

    def save() -> None:
        if args.json:  # after every case: a later failure or timeout keeps what was measured
            write_text_atomic(args.json, json.dumps(results, indent=2))  # whole or not at all

    def failed(key: str, err: BaseException) -> None:
        traceback.print_exc()
        msg = "".join(traceback.format_exception_only(type(err), err)).strip()
        results.setdefault("errors", {})[key] = msg[-1500:]

    def case(key: str, label: str, make: Callable[[contextlib.ExitStack], Any]) -> None:
        """Time one feed; its loader comes from `make` and is closed after. A case that
        fails is recorded under "errors" and the others still run."""
        try:
            with contextlib.ExitStack() as stack:
                batches = make(stack)
                model, opt = fresh_model()
                rate, util = train_steps(model, opt, batches, args.steps, args.warmup, dev)
        except Exception as err:
            failed(key, err)
            print(f"{label:34s} FAILED: {err}")
        else:
            results[key], results[f"{key}_util"] = rate, util
            print(f"{label:34s} {rate:8.1f} img/s  GPU {util:.0f}%")
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        save()

    cfg = _fastmask_config()
    common = dict(batch_size=bs, image_size=size, augment=cfg, threads=threads)  # fmt: skip
    device_kw = {} if dry else {"device": "cuda"}

    def fastmask_uint8(stack: contextlib.ExitStack) -> Any:
        return stack.enter_context(Loader(paths, labels, normalize=True, **device_kw, **common))

    def fastmask_float(stack: contextlib.ExitStack) -> Any:
        return stack.enter_context(Loader(paths, labels, normalize=True, **common))

    def gpu_decode(stack: contextlib.ExitStack) -> Any:
        return stack.enter_context(GpuJpegLoader(
            paths, labels, augment=as_augment(cfg), batch_size=bs, image_size=(size, size),
            train=True, seed=0, device=dev, normalize=True, mean=REFERENCE_MEAN,
            std=REFERENCE_STD, threads=threads,
        ))  # fmt: skip

    def torchvision_pil(stack: contextlib.ExitStack) -> Any:
        # drop_last: a smaller last batch would make cudnn.benchmark tune anew in the timing.
        tv = _torchvision_loader(paths, bs, threads, pin_memory=not dry, size=size, drop_last=True)
        return _Relabel(tv)

    case("ceiling", "(1) ceiling", lambda stack: Ceiling())
    case("fastmask_uint8", "(2) fastmask uint8, GPU normalise", fastmask_uint8)
    if args.profile:
        try:
            with contextlib.ExitStack() as stack:
                results["profile"] = profile_steps(
                    fresh_model, fastmask_uint8(stack), dev, args.profile
                )
        except Exception as err:
            failed("profile", err)
        save()
    case("fastmask_float", "(2b) fastmask float32 from workers", fastmask_float)
    case("fastmask_gpu_decode", '(2c) fastmask decode="gpu"', gpu_decode)
    case("torchvision_pil", "(3) torchvision + PIL", torchvision_pil)
    ceiling = results.get("ceiling")
    feeds = ("fastmask_uint8", "fastmask_float", "fastmask_gpu_decode", "torchvision_pil")
    for key in feeds:
        if ceiling and key in results:
            results[f"{key}_vs_ceiling"] = results[key] / ceiling
    if "fastmask_uint8" in results:
        results["fastmask"] = results["fastmask_uint8"]  # the names older results use
        if ceiling:
            results["fastmask_vs_ceiling"] = results["fastmask_uint8_vs_ceiling"]
        if results.get("torchvision_pil"):
            ratio = results["fastmask_uint8"] / results["torchvision_pil"]
            results["fastmask_vs_torchvision"] = ratio
    shares = [
        f"{k} {results[f'{k}_vs_ceiling']:.0%}" for k in feeds if f"{k}_vs_ceiling" in results
    ]
    print("of the ceiling: " + ", ".join(shares))
    if results.get("errors"):
        print("FAILED: " + ", ".join(results["errors"]))
    save()
    return 1 if results.get("errors") else 0


def profile_steps(fresh_model: Any, loader: Any, dev: Any, out: str) -> list[str]:
    """Trace 10 steps of the fastmask case; the top operators by device (or CPU) time."""
    from torch.profiler import ProfilerActivity, profile

    model, opt = fresh_model()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        train_steps(model, opt, loader, 10, 2, dev)
    Path(out).mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(Path(out) / "gpu_feed_trace.json"))
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=15)
    print(table)
    return table.splitlines()


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
