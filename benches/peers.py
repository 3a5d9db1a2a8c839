"""fastmask beside its peers, CPU only, same images, threads and work, in one run:

  fastmask uncached (native loader)   torchvision DataLoader + PIL (the baseline)
  FFCV, JPEG .beton (when `ffcv` imports)
  DALI CPU, plain decode then crop, and crop fused into decode (when `nvidia.dali` imports)

Work: decode, centre square crop (3/4 of the height of the 384x512 synthetic photos),
antialiased resize to 224, random flip, normalised float32 CHW, batches of 64. FFCV and DALI
re-read the same files (FFCV through a .beton written once, not timed). Not part of
`make test`; setup in benches/README.md.

    python benches/peers.py --data DIR [--images 1024] [--threads 2] [--repeats 3] [--rounds 3]
                             [--json F]

With --rounds K every pipeline is built, timed and dropped in turn, K times; the ratio to the
best peer is taken per round, then its median is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SIZE = 224
OURS = ("fastmask_uncached", "torchvision_pil")  # the rest are peers


def timed(make_epoch: Callable[[], Iterable[Any]], repeats: int) -> tuple[float, list[float]]:
    """Median images/s over `repeats` epochs, after one untimed warm-up epoch."""
    rates = []
    for k in range(repeats + 1):
        t0 = time.perf_counter()
        n = sum(int(b[0].shape[0]) for b in make_epoch())
        if k:
            rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def ffcv_epochs(paths: list[str], bs: int, threads: int, work: Path) -> Callable[[], Any]:
    import numpy as np
    from ffcv.fields import IntField, RGBImageField
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import NormalizeImage, RandomHorizontalFlip, ToTensor, ToTorchImage
    from ffcv.writer import DatasetWriter
    from PIL import Image

    from fastmask.loader import REFERENCE_MEAN, REFERENCE_STD

    class Files:
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> tuple[Any, int]:
            with Image.open(paths[i]) as im:
                return im.convert("RGB"), 0

    # Keyed by the image count: a .beton left by a run on fewer images must not be reused.
    beton = work / f"peers_{len(paths)}_q90.beton"
    if not beton.exists():
        # jpg mode keeps JPEG bytes (re-encoded at quality 90, as the synthetic files are).
        fields = {"image": RGBImageField(write_mode="jpg", jpeg_quality=90), "label": IntField()}
        DatasetWriter(str(beton), fields, num_workers=threads).from_indexed_dataset(Files())
    mean = np.array(REFERENCE_MEAN) * 255
    std = np.array(REFERENCE_STD) * 255
    loader = Loader(
        str(beton), batch_size=bs, num_workers=threads, order=OrderOption.RANDOM,
        drop_last=False,  # FFCV drops the last partial batch by default; the others keep it
        pipelines={
            # ratio 1.0: the centre square of the short side, as the others crop; the crop is
            # resized with cv2 INTER_AREA (antialiased). On the CPU NormalizeImage is a numba
            # op on HWC uint8 arrays, so it must come before ToTensor (after it, FFCV 1.0.2's
            # Graph.group_operations loops forever). ToTorchImage() gives an NCHW view of
            # NHWC memory (channels_last), the layout fastmask's batches have too.
            "image": [CenterCropRGBImageDecoder((SIZE, SIZE), ratio=1.0),
                      RandomHorizontalFlip(), NormalizeImage(mean, std, np.float32),
                      ToTensor(), ToTorchImage()],
            "label": [IntDecoder(), ToTensor()],
        },
    )  # fmt: skip
    return lambda: loader


def dali_epochs(paths: list[str], bs: int, threads: int, fused: bool) -> Callable[[], Any]:
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
    from PIL import Image

    from fastmask.loader import REFERENCE_MEAN, REFERENCE_STD

    with Image.open(paths[0]) as im:
        side = min(im.size)

    @pipeline_def(batch_size=bs, num_threads=threads, device_id=None)  # CPU only
    def pipe() -> Any:
        jpegs, labels = fn.readers.file(files=paths, random_shuffle=True, name="reader")
        if fused:  # DALI decodes only the crop's rows and columns (libjpeg-turbo crop/skip)
            images = fn.decoders.image_crop(jpegs, device="cpu", output_type=types.RGB,
                                            crop=(side, side))  # fmt: skip
        else:
            images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
            images = fn.crop(images, crop=(side, side))
        images = fn.resize(images, resize_x=SIZE, resize_y=SIZE, antialias=True)
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW", mirror=fn.random.coin_flip(),
            mean=[255 * m for m in REFERENCE_MEAN], std=[255 * s for s in REFERENCE_STD],
        )  # fmt: skip
        return images, labels

    p = pipe()
    p.build()
    it = DALIGenericIterator(
        p, ["images", "labels"], reader_name="reader",
        last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True,
    )  # fmt: skip
    return lambda: ([b[0]["images"]] for b in it)


def _versions() -> dict[str, str]:
    """Versions of what was timed, for the results file."""
    from importlib import metadata

    out = {}
    for dist in ("torch", "torchvision", "pillow", "ffcv", "nvidia-dali-cuda120", "numba"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    from fastmask import _native

    info = _native.build_info()
    out["fastmask"] = f"{info['version']} ({info['profile']})"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs per pipeline and round")
    ap.add_argument(
        "--rounds", type=int, default=1,
        help="time every pipeline in turn this many times; ratios are per round, then the median",
    )  # fmt: skip
    ap.add_argument("--work", default="/tmp/peers")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1:
        ap.error(f"--repeats and --rounds must be at least 1, got {args.repeats} and {args.rounds}")

    import torch

    from fastmask.bench import _torchvision_loader
    from fastmask.data import build_index
    from fastmask.loader import AugmentConfig, Loader

    torch.set_num_threads(1)
    frame = build_index(args.data).frame
    paths = frame[frame["ext"].isin([".jpg", ".jpeg"])]["path"].tolist()[: args.images]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bs, n = args.batch_size, args.threads
    r: dict[str, Any] = {
        "images": len(paths), "threads": n, "batch_size": bs, "repeats": args.repeats,
        "rounds": args.rounds, "versions": _versions(), "peers": {},
    }  # fmt: skip
    # No colour jitter here: FFCV and DALI's plain pipelines above do not jitter either.
    cfg = AugmentConfig("none", center_crop=(1.0, 0.75), center_offset_y=0.0, hflip_p=0.5)

    def fastmask_epochs() -> Any:
        fm = Loader(paths, batch_size=bs, image_size=SIZE, augment=cfg, threads=n,
                    normalize=True, drop_last=False)  # fmt: skip
        return (lambda: fm), fm.close

    def pil_epochs() -> Any:
        tv = _torchvision_loader(paths, bs, n, jitter=False)
        return (lambda: tv), None

    def peer(make: Callable[[], Callable[[], Any]]) -> Callable[[], Any]:
        return lambda: (make(), None)

    makers: dict[str, Callable[[], Any]] = {
        "fastmask_uncached": fastmask_epochs,
        "torchvision_pil": pil_epochs,
        "ffcv_jpeg_beton": peer(lambda: ffcv_epochs(paths, bs, n, work)),
        "dali_cpu_plain": peer(lambda: dali_epochs(paths, bs, n, fused=False)),
        "dali_cpu_fused_crop": peer(lambda: dali_epochs(paths, bs, n, fused=True)),
    }
    runs: dict[str, list[float]] = {}
    ratios: list[float] = []
    for k in range(args.rounds):
        rates: dict[str, float] = {}
        for name, make in makers.items():
            if name in r["peers"]:
                continue  # not installed
            # Built, timed and dropped one at a time: no pipeline prefetches (or holds worker
            # processes) while another is timed.
            try:
                epochs, close = make()
            except ImportError as e:
                r["peers"][name] = f"not installed ({e.name})"
                print(f"{name:22s} skipped: not installed ({e.name})")
                continue
            try:
                rates[name] = timed(epochs, args.repeats)[0]
            finally:
                if close is not None:
                    close()
                del epochs
                gc.collect()
            runs.setdefault(name, []).append(rates[name])
        peer_rates = [v for name, v in rates.items() if name not in OURS]
        if peer_rates:
            ratios.append(rates["fastmask_uncached"] / max(peer_rates))
        done = ", ".join(f"{a} {b:.0f}" for a, b in rates.items())
        print(f"round {k + 1}/{args.rounds} (images/s): {done}")
    med = {name: statistics.median(v) for name, v in runs.items()}
    r["runs"] = runs
    r["fastmask_uncached"], r["torchvision_pil"] = med["fastmask_uncached"], med["torchvision_pil"]
    rates = {k: v for k, v in med.items() if k not in OURS}
    r["peers"].update(rates)
    print(f"medians over {args.rounds} round(s) of {args.repeats} epochs, images/s:")
    print(f"fastmask uncached      {r['fastmask_uncached']:8.1f}")
    print(f"torchvision + PIL      {r['torchvision_pil']:8.1f}")
    for k, v in rates.items():
        print(f"{k:22s} {v:8.1f}")
    if rates:
        best = max(rates, key=rates.__getitem__)
        r["best_peer"] = best
        r["fastmask_vs_best_peer"] = statistics.median(ratios)
        r["fastmask_vs_best_peer_runs"] = ratios
        each = ", ".join(f"{x:.2f}" for x in ratios)
        print(f"fastmask / best peer ({best}) = {r['fastmask_vs_best_peer']:.2f}x (rounds: {each})")
    r["fastmask_vs_torchvision"] = statistics.median(
        [a / b for a, b in zip(runs["fastmask_uncached"], runs["torchvision_pil"], strict=True)]
    )
    print(f"fastmask / torchvision + PIL = {r['fastmask_vs_torchvision']:.2f}x")
    if args.json:
        from fastmask.files import write_text_atomic

        write_text_atomic(Path(args.json), json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
