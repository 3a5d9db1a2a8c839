"""`python -m fastmask bench loader`: fastmask against the PIL + torchvision pipeline users run
today, in one run, on the same images and cores. Prints images/s, medians and ratios.

(a) fastmask, uncached    (b) fastmask, warm cache    (c) torchvision DataLoader over PIL
(d) decode alone, one thread: fastmask vs PIL (libjpeg-turbo)
All loaders do the same work: centre crop, resize to 224, flip, colour jitter, to float,
normalise.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastmask.argtypes import non_negative_int, positive_int
from fastmask.errors import FastmaskError

log = logging.getLogger(__name__)

SIZE = 224
JITTER = 0.2


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _median_rate(fn: Callable[[], int], repeats: int) -> tuple[float, list[float]]:
    rates = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def _fastmask_config() -> Any:
    from fastmask.loader import AugmentConfig

    # Same work as the torchvision baseline below: crop, resize, flip, b/c/s jitter.
    return AugmentConfig(
        "none",
        center_crop=(1.0, 0.75),
        center_offset_y=0.0,
        rrc_p=0.0,
        hflip_p=0.5,
        brightness=JITTER,
        contrast=JITTER,
        saturation=JITTER,
        hue=0.0,
        jitter_p=1.0,
    )


def _torchvision_loader(
    paths: list[str],
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
    size: int = SIZE,
    jitter: bool = True,
    drop_last: bool = False,
) -> Any:
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from fastmask.loader import REFERENCE_MEAN, REFERENCE_STD

    transform = T.Compose(
        [
            T.Lambda(lambda im: T.functional.center_crop(im, [im.height * 3 // 4, im.width])),
            T.Resize((size, size)),
            T.RandomHorizontalFlip(),
            *([T.ColorJitter(JITTER, JITTER, JITTER)] if jitter else []),
            T.ToTensor(),
            T.Normalize(REFERENCE_MEAN, REFERENCE_STD),
        ]
    )

    class PilDataset(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> Any:
            with Image.open(paths[i]) as im:
                return transform(im.convert("RGB")), 0

    return torch.utils.data.DataLoader(
        PilDataset(),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=drop_last,
        pin_memory=pin_memory,
    )


def bench_loader(
    data: str | Path,
    *,
    threads: int | None = None,
    images: int | None = None,
    batch_size: int = 64,
    repeats: int = 3,
    rss_epochs: int = 20,
    lenient: bool = False,
) -> dict[str, Any]:
    import torch

    from fastmask import _native
    from fastmask.data import build_index
    from fastmask.loader import Loader, default_threads, warn_if_unoptimized

    warn_if_unoptimized()
    n_threads = threads or default_threads()
    frame = build_index(data, lenient=lenient).frame
    jpegs = frame[frame["ext"].isin([".jpg", ".jpeg"])]
    paths = jpegs["path"].tolist()[: images or None]
    if len(paths) < batch_size:
        raise FastmaskError(f"need at least {batch_size} JPEG images in {data}, found {len(paths)}")
    torch.set_num_threads(1)  # the float conversion in both pipelines stays on one core
    cfg = _fastmask_config()
    results: dict[str, Any] = {
        "images": len(paths),
        "threads": n_threads,
        "batch_size": batch_size,
        "image_size": SIZE,
        "repeats": repeats,
    }

    def run_epoch(loader: Any) -> int:
        return sum(int(x.shape[0]) for x, _ in loader)

    log.info("(a) fastmask uncached, %d threads", n_threads)
    kw: dict[str, Any] = dict(batch_size=batch_size, image_size=SIZE, augment=cfg,
                              threads=n_threads, normalize=True, drop_last=False)  # fmt: skip
    with Loader(paths, **kw) as loader:
        results["fastmask_uncached"], results["fastmask_uncached_runs"] = _median_rate(
            lambda: run_epoch(loader), repeats
        )
        # The baseline of the cache's RSS: this loader's ring buffers are resident now, and
        # (b)'s, the same size, will be once its first epoch has filled the cache.
        gc.collect()
        rss0 = _rss_bytes()
    log.info("(b) fastmask, warm cache")
    with Loader(paths, cache=True, **kw) as loader:
        run_epoch(loader)  # fills the cache
        rss_cached = _rss_bytes() - rss0
        results["cache_pixel_bytes"] = loader.cache_bytes_used
        results["cache_rss_ratio"] = rss_cached / max(1, loader.cache_bytes_used)
        results["fastmask_cached"], results["fastmask_cached_runs"] = _median_rate(
            lambda: run_epoch(loader), repeats
        )
        if rss_epochs > 1:
            log.info("RSS over %d cached epochs", rss_epochs)
            rss = []
            for epoch in range(rss_epochs):
                loader.set_epoch(epoch)
                run_epoch(loader)
                rss.append(_rss_bytes())
            results["rss_epoch2_mb"] = rss[1] / 2**20
            results["rss_last_mb"] = rss[-1] / 2**20
            results["rss_growth"] = rss[-1] / rss[1] - 1.0
    log.info("(c) torchvision DataLoader + PIL, %d workers", n_threads)
    tv = _torchvision_loader(paths, batch_size, n_threads)
    run_epoch(tv)  # worker start-up is not what we measure
    results["torchvision_pil"], results["torchvision_pil_runs"] = _median_rate(
        lambda: run_epoch(tv), repeats
    )
    log.info("(d) decode alone, one thread")
    from PIL import Image

    sample = paths[: min(len(paths), 200)]

    def pil_decode() -> int:
        for p in sample:
            with Image.open(p) as im:
                im.convert("RGB").load()
        return len(sample)

    def fm_decode() -> int:
        for p in sample:
            _native.decode_file(p)
        return len(sample)

    # The rows the pipeline's ROI decode keeps for the bench's centre crop (3/4 of the height)
    # plus the resize filter's margin, as rust/roi.rs sample_roi computes it.
    h0, w0 = _native.decode_file(sample[0]).shape[:2]
    margin = -(-w0 // SIZE) + 2
    crop_roi = (0, max(0, h0 // 8 - margin), w0, min(h0, h0 - h0 // 8 + margin))

    def fm_decode_roi() -> int:
        for p in sample:
            _native.decode_file(p, roi=crop_roi)
        return len(sample)

    def fm_decode_scaled() -> int:
        for p in sample:
            _native.decode_file(p, min_size=(128, 96))  # (height, width)
        return len(sample)

    def pil_decode_draft() -> int:
        for p in sample:
            with Image.open(p) as im:
                im.draft("RGB", (96, 128))
                im.convert("RGB").load()
        return len(sample)

    def fm_decode_parallel() -> int:
        # N threads decoding the sample at once (decode_file releases the GIL), each taking
        # the next file from one shared iterator so that none idles while another still
        # works: the ceiling as measured, where N x one thread assumes perfect scaling.
        from concurrent.futures import ThreadPoolExecutor

        todo = iter(sample)

        def one(_: int) -> int:
            done = 0
            for p in todo:  # next() on a list iterator is atomic under the GIL
                _native.decode_file(p)
                done += 1
            return done

        with ThreadPoolExecutor(n_threads) as pool:
            return sum(pool.map(one, range(n_threads)))

    reps = max(repeats, 5)
    results["decode_pil"], _ = _median_rate(pil_decode, reps)
    results["decode_fastmask"], _ = _median_rate(fm_decode, reps)
    results["decode_fastmask_parallel"], _ = _median_rate(fm_decode_parallel, reps)
    results["decode_fastmask_roi"], _ = _median_rate(fm_decode_roi, reps)
    results["decode_pil_draft_quarter"], _ = _median_rate(pil_decode_draft, reps)
    results["decode_fastmask_scaled_quarter"], _ = _median_rate(fm_decode_scaled, reps)
    results["ratio_uncached_vs_torchvision"] = (
        results["fastmask_uncached"] / results["torchvision_pil"]
    )
    results["ratio_cached_vs_torchvision"] = results["fastmask_cached"] / results["torchvision_pil"]
    results["decode_time_ratio_fastmask_vs_pil"] = (
        results["decode_pil"] / results["decode_fastmask"]
    )
    results["pipeline_vs_decode_scaling"] = results["fastmask_uncached"] / (
        n_threads * results["decode_fastmask"]
    )
    # Against the decode (a) actually does: only the crop's rows.
    results["pipeline_vs_roi_decode_scaling"] = results["fastmask_uncached"] / (
        n_threads * results["decode_fastmask_roi"]
    )
    results["pipeline_vs_parallel_decode"] = (
        results["fastmask_uncached"] / results["decode_fastmask_parallel"]
    )
    results["decode_parallel_scaling"] = (
        results["decode_fastmask_parallel"] / results["decode_fastmask"]
    )
    results["roi_decode_speedup"] = results["decode_fastmask_roi"] / results["decode_fastmask"]
    # What (a) could reach if everything but decode were free and N threads scaled perfectly.
    results["decode_ceiling_vs_torchvision"] = (
        n_threads * results["decode_fastmask"] / results["torchvision_pil"]
    )
    results["targets"] = {
        "uncached >= 5x torchvision": results["ratio_uncached_vs_torchvision"] >= 5,
        "cached >= 25x torchvision": results["ratio_cached_vs_torchvision"] >= 25,
        "decode time <= 1.15x PIL": results["decode_time_ratio_fastmask_vs_pil"] <= 1.15,
        "pipeline >= 0.9 x N x decode": results["pipeline_vs_decode_scaling"] >= 0.9,
        "cache RSS <= 1.1x pixels": results["cache_rss_ratio"] <= 1.1,
    }
    if "rss_growth" in results:  # only measured with rss_epochs >= 2
        results["targets"]["RSS growth < 5% epoch 2..N"] = results["rss_growth"] < 0.05
    return results


def format_results(r: dict[str, Any]) -> str:
    lines = [
        f"fastmask bench loader: {r['images']} JPEGs, {r['threads']} threads, batch "
        f"{r['batch_size']}, {r['image_size']}px, median of {r['repeats']} runs (images/s)",
        f"  (a) fastmask uncached        {r['fastmask_uncached']:9.1f}",
        f"  (b) fastmask warm cache      {r['fastmask_cached']:9.1f}",
        f"  (c) torchvision + PIL        {r['torchvision_pil']:9.1f}",
        f"  (d) decode 1 thread: fastmask {r['decode_fastmask']:.1f}, PIL {r['decode_pil']:.1f}"
        f"; scaled 1/4: fastmask {r['decode_fastmask_scaled_quarter']:.1f},"
        f" PIL draft {r['decode_pil_draft_quarter']:.1f}",
        f"  ratio (a)/(c) = {r['ratio_uncached_vs_torchvision']:.2f}x",
        f"  ratio (b)/(c) = {r['ratio_cached_vs_torchvision']:.2f}x",
        f"  decode time fastmask/PIL = {r['decode_time_ratio_fastmask_vs_pil']:.3f}",
        f"  (a) / (N x single-thread decode) = {r['pipeline_vs_decode_scaling']:.2f}",
        f"  ROI decode of the crop's rows, 1 thread: {r['decode_fastmask_roi']:.1f}"
        f" ({r['roi_decode_speedup']:.2f}x the full decode);"
        f" (a) / (N x ROI decode) = {r['pipeline_vs_roi_decode_scaling']:.2f}",
        f"  decode alone, {r['threads']} threads at once: {r['decode_fastmask_parallel']:.1f}"
        f" ({r['decode_parallel_scaling']:.2f}x one thread); (a) / that"
        f" = {r['pipeline_vs_parallel_decode']:.2f}",
        f"  decode ceiling: N x single-thread decode = "
        f"{r['decode_ceiling_vs_torchvision']:.2f}x (c), the most (a) can reach",
        f"  cache: {r['cache_pixel_bytes'] / 2**20:.1f} MiB pixels, RSS/pixels "
        f"= {r['cache_rss_ratio']:.3f}",
    ]
    if "rss_growth" in r:
        lines.append(
            f"  RSS epoch 2 {r['rss_epoch2_mb']:.1f} MiB -> last {r['rss_last_mb']:.1f} MiB "
            f"({r['rss_growth'] * 100:+.2f}%)"
        )
    else:
        lines.append("  RSS growth: not measured (--rss-epochs below 2)")
    for name, ok in r["targets"].items():
        lines.append(f"  target {name}: {'met' if ok else 'NOT met'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    results = bench_loader(
        args.data,
        threads=args.threads,
        images=args.images,
        batch_size=args.batch_size,
        repeats=args.repeats,
        rss_epochs=args.rss_epochs,
        lenient=args.lenient,
    )
    print(format_results(results))
    if args.json:
        from fastmask.files import write_text_atomic

        write_text_atomic(Path(args.json), json.dumps(results, indent=2, default=float))
    return 0


def bench_check(
    data: str | Path,
    *,
    threads: int = 2,
    repeats: int = 3,
    epochs: int = 2,
    batch_size: int = 64,
    lenient: bool = False,
) -> dict[str, Any]:
    """train's header check against what it protects: one uncached loader epoch, same files.

    Also the full check's speed (`fastmask check`). Medians of `repeats` / `epochs` runs.
    """
    from fastmask.check import check_files
    from fastmask.data import build_index
    from fastmask.loader import Loader

    frame = build_index(data, lenient=lenient).frame
    paths, labels = frame["path"].tolist(), frame["mask"].tolist()

    def timed(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    header = [
        timed(lambda: check_files(paths, full=False, threads=threads)) for _ in range(repeats)
    ]
    full = [timed(lambda: check_files(paths, full=True, threads=threads)) for _ in range(repeats)]

    def epoch() -> None:
        with Loader(paths, labels, batch_size=batch_size, image_size=SIZE, threads=threads,
                    normalize=True) as loader:  # fmt: skip
            for _ in loader:
                pass

    epoch_s = [timed(epoch) for _ in range(epochs)]
    h, f, e = (statistics.median(v) for v in (header, full, epoch_s))
    return {
        "images": len(paths),
        "threads": threads,
        "header_check_s": h,
        "header_check_runs_s": header,
        "full_check_images_per_s": len(paths) / f,
        "epoch_loading_s": e,
        "epoch_loading_runs_s": epoch_s,
        "header_check_vs_epoch": h / e,
    }


def run_check(args: argparse.Namespace) -> int:
    opts = {k: getattr(args, k) for k in ("threads", "repeats", "epochs", "lenient")}
    r = bench_check(args.data, **opts)
    print(
        f"{r['images']} images, {r['threads']} threads (medians)\n"
        f"  header check (train, before epoch 1)  {r['header_check_s']:.2f} s\n"
        f"  one uncached loader epoch (224 px)    {r['epoch_loading_s']:.1f} s\n"
        f"  ratio header check / epoch            {100 * r['header_check_vs_epoch']:.1f} %\n"
        f"  full check (fastmask check)           {r['full_check_images_per_s']:.0f} images/s"
    )
    if args.json:
        from fastmask.files import write_text_atomic

        write_text_atomic(Path(args.json), json.dumps(r, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks against the PIL + torchvision baseline")
    which = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    lp = which.add_parser("loader", help="loader throughput vs torchvision DataLoader + PIL")
    lp.add_argument("--data", required=True, help="data set (fastmask synth writes one)")
    lp.add_argument(
        "--threads", type=non_negative_int, default=None, help="threads / workers (all cores)"
    )
    lp.add_argument("--images", type=positive_int, default=None, help="use at most this many JPEGs")
    lp.add_argument("--batch-size", type=positive_int, default=64)
    lp.add_argument("--repeats", type=positive_int, default=3, help="timed runs per case (median)")
    lp.add_argument(
        "--rss-epochs", type=non_negative_int, default=20, help="cached epochs for the RSS check"
    )
    lp.add_argument("--json", help="also write the figures to this JSON file")
    lp.add_argument(
        "--lenient", action="store_true", help="skip broken items of the data set with a warning"
    )
    lp.set_defaults(func=run)
    cp = which.add_parser("check", help="train's header check against one epoch's loading")
    cp.add_argument("--data", required=True, help="data set (fastmask synth writes one)")
    cp.add_argument(
        "--threads", type=non_negative_int, default=2, help="check and loader threads (2)"
    )
    cp.add_argument(
        "--repeats", type=positive_int, default=3, help="timed checks per kind (median)"
    )
    cp.add_argument("--epochs", type=positive_int, default=2, help="timed loader epochs (median)")
    cp.add_argument("--json", help="also write the figures to this JSON file")
    cp.add_argument(
        "--lenient", action="store_true", help="skip broken items of the data set with a warning"
    )
    cp.set_defaults(func=run_check)
