"""`Loader(..., decode="gpu")`: for machines whose CPUs cannot keep up with the GPU.

The CPU only reads file bytes; batched nvJPEG (`torchvision.io.decode_jpeg(device="cuda")`)
decodes them and the crop, antialiased resize, flip, brightness/contrast/saturation jitter
and normalisation run on the GPU. The epoch plan (shuffle, oversampling, DDP shard) is the
native loader's (`_native.epoch_plan`), so both paths visit the same samples.

Differences from the CPU path: JPEG only, no EXIF orientation, and of the augmentations
only the crop (centre crop, crop boxes, random resized crop), flip and colour jitter; the
others (rotation, hue, grayscale, noise, erasing, mask appearance) are refused up front.
`benches/gpu_feed.py` compares it with the CPU path. The code is device-agnostic, so the
tests run it on the CPU (`GpuJpegLoader(..., device="cpu")`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import torch

from fastmask import _native

# Knobs the GPU path implements; any other non-neutral knob is refused.
_UNSUPPORTED = ("rotate_p", "hue", "grayscale_p", "noise_p", "erase_p", "mask_aug_p")


def require_cuda(option: str = 'decode="gpu"') -> None:
    """A clear error, naming the option, on a machine without CUDA."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"Loader({option}) needs a CUDA GPU (nvJPEG through torchvision), and torch sees "
            f"none here (torch {torch.__version__}, CUDA build {torch.version.cuda}). "
            'Use decode="cpu" (the default).'
        )


def _check_augment(augment: Any, train: bool) -> None:
    if not train:
        return
    used = [k for k in _UNSUPPORTED if float(getattr(augment, k)) > 0.0]
    if used and float(augment.rotate_deg) <= 0.0 and used == ["rotate_p"]:
        used = []
    if used:
        raise ValueError(
            f'decode="gpu" does not implement {", ".join(used)}; use decode="cpu" or an '
            "augmentation without them"
        )


class GpuJpegLoader:
    """Batches decoded and augmented on `device`; same iteration contract as `Loader`
    (uint8 [B,3,H,W] channels_last, or normalised float32; int64 labels)."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        labels: Sequence[int] | np.ndarray | None,
        *,
        augment: Any,
        batch_size: int,
        image_size: tuple[int, int],
        train: bool,
        seed: int,
        device: torch.device,
        normalize: bool,
        mean: Sequence[float],
        std: Sequence[float],
        crop_boxes: Sequence[tuple[float, float, float, float] | None] | None = None,
        oversample: None | Literal["balanced"] | Mapping[int, float] = None,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        shuffle: bool = True,
        threads: int = 4,
    ) -> None:
        from fastmask.loader import DeviceNormalize

        _check_augment(augment, train)
        self.paths = [os.fspath(p) for p in paths]
        self.labels = (
            [0] * len(self.paths) if labels is None else [int(x) for x in np.ravel(labels)]
        )
        self._has_labels = labels is not None
        self.augment, self.train, self.seed = augment, train, seed
        self.batch_size = batch_size
        self.height, self.width = image_size
        self.device = device
        self.crop_boxes = crop_boxes
        self._plan_kw: dict[str, Any] = dict(
            seed=seed, shuffle=shuffle, oversample=oversample, rank=rank,
            world_size=world_size, drop_last=drop_last, batch_size=batch_size,
        )  # fmt: skip
        self._normalize = DeviceNormalize(mean, std, device) if normalize else None
        # On CUDA the batch is decoded and augmented on this loader's own stream (see _batch).
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._pool = ThreadPoolExecutor(max(1, threads))
        self._epoch = 0
        self._plan = self._make_plan(0)

    def _make_plan(self, epoch: int) -> list[int]:
        return list(_native.epoch_plan(self.labels, epoch=epoch, **self._plan_kw))

    def __len__(self) -> int:
        return math.ceil(len(self._plan) / self.batch_size)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def samples_per_epoch(self) -> int:
        return len(self._plan)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> GpuJpegLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torchvision.io import read_file

        self._plan = self._make_plan(self._epoch)
        bs = self.batch_size
        starts = list(range(0, len(self._plan), bs))
        # File reads run a batch ahead in the pool; decode and augment on the device.
        ahead = None
        for k, start in enumerate(starts):
            idx = self._plan[start : start + bs]
            if ahead is None:
                ahead = self._pool.map(read_file, [self.paths[i] for i in idx])
            data = list(ahead)
            if k + 1 < len(starts):
                nxt = self._plan[starts[k + 1] : starts[k + 1] + bs]
                ahead = self._pool.map(read_file, [self.paths[i] for i in nxt])
            yield self._batch(idx, data, k)

    def _batch(
        self, idx: list[int], data: list[torch.Tensor], k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._stream is None:
            return self._decode_augment(idx, data, k)
        # nvJPEG's hardware decoder (A100, H100, H200) does not wait for work queued before it
        # on the stream, and torchvision gives it output blocks that the caching allocator
        # recycled on the caller's stream (pytorch/vision#9606): decoding on the training
        # stream can overwrite memory that queued kernels have still to read. So decode on
        # this loader's stream, drained first (it only holds the last batch's augmentation),
        # and hand the batch to the consumer's stream as Loader does.
        self._stream.synchronize()
        with torch.cuda.stream(self._stream):
            images, labels = self._decode_augment(idx, data, k)
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self._stream)
        images.record_stream(current)
        labels.record_stream(current)
        return images, labels

    def _decode_augment(
        self, idx: list[int], data: list[torch.Tensor], k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_jpeg

        decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        gen = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self._epoch * 9_176 + k) % (2**63)
        )
        out = torch.empty(
            (len(idx), 3, self.height, self.width), dtype=torch.uint8, device=self.device
        ).contiguous(memory_format=torch.channels_last)
        for j, (i, img) in enumerate(zip(idx, decoded, strict=True)):
            box = None if self.crop_boxes is None else self.crop_boxes[i]
            out[j] = augment_one(img, box, self.augment, self.train, (self.height, self.width), gen)
        labels = torch.tensor(
            [self.labels[i] if self._has_labels else -1 for i in idx], dtype=torch.int64
        ).to(self.device)
        if self._normalize is not None:
            return self._normalize(out), labels
        return out, labels


def crop_region(
    h: int, w: int, box: tuple[float, float, float, float] | None, augment: Any
) -> tuple[float, float, float, float]:
    """(x, y, w, h) as rust/augment/geometry.rs crop_region: the box clamped to the image,
    else the centre crop shifted by center_offset_y."""
    if box is not None and not any(math.isnan(v) for v in box):
        x0, x1 = min(max(box[0], 0.0), w), min(max(box[2], 0.0), w)
        y0, y1 = min(max(box[1], 0.0), h), min(max(box[3], 0.0), h)
        if x1 - x0 >= 1.0 and y1 - y0 >= 1.0:
            return x0, y0, x1 - x0, y1 - y0
    cw, ch = augment.center_crop
    rw, rh = w * min(max(cw, 0.0), 1.0), h * min(max(ch, 0.0), 1.0)
    y = min(max((h - rh) * 0.5 + augment.center_offset_y * h, 0.0), h - rh)
    return (w - rw) * 0.5, y, rw, rh


def augment_one(
    img: torch.Tensor,
    box: tuple[float, float, float, float] | None,
    augment: Any,
    train: bool,
    size: tuple[int, int],
    gen: torch.Generator,
) -> torch.Tensor:
    """One uint8 [3,H,W] image on any device -> uint8 [3, size]: crop (random resized in
    training), antialiased bilinear resize, flip, brightness/contrast/saturation."""
    _, h, w = img.shape
    x, y, rw, rh = crop_region(h, w, box, augment)
    r = lambda: float(torch.rand((), generator=gen))  # noqa: E731
    if train and r() < augment.rrc_p:
        lo, hi = augment.rrc_scale
        area = rw * rh * (lo + (hi - lo) * r())
        lr0, lr1 = math.log(augment.rrc_ratio[0]), math.log(augment.rrc_ratio[1])
        ratio = math.exp(lr0 + (lr1 - lr0) * r())
        bw, bh = min(rw, math.sqrt(area * ratio)), min(rh, math.sqrt(area / ratio))
        x, y, rw, rh = x + (rw - bw) * r(), y + (rh - bh) * r(), bw, bh
    x0, y0 = int(round(x)), int(round(y))
    x1, y1 = max(x0 + 1, int(round(x + rw))), max(y0 + 1, int(round(y + rh)))
    crop = img[:, y0:y1, x0:x1].unsqueeze(0).float()
    out = torch.nn.functional.interpolate(
        crop, size=size, mode="bilinear", antialias=True, align_corners=False
    )[0]
    if train:
        if r() < augment.hflip_p:
            out = out.flip(-1)
        if r() < augment.jitter_p:
            f = lambda v: 1.0 + v * (2 * r() - 1) if v > 0 else 1.0  # noqa: E731
            b, c, s = f(augment.brightness), f(augment.contrast), f(augment.saturation)
            out = out * b
            grey = (0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2]).unsqueeze(0)
            out = (out - grey.mean()) * c + grey.mean()
            grey = (0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2]).unsqueeze(0)
            out = (out - grey) * s + grey
    return out.round_().clamp_(0, 255).to(torch.uint8)
