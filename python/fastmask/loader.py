"""The native loader: batches decoded, cropped and augmented in Rust, straight into a ring of
(pinned) buffers, handed to PyTorch without copies.

files -> data index -> **native loader** -> trainer -> predictions -> combine -> CSV

```python
with Loader(paths, labels, batch_size=64, image_size=(224, 224), augment="mask") as loader:
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader:  # uint8 [B,3,H,W] channels_last, int64 [B]
            ...
```
A batch the consumer still holds is never overwritten: a slot is refilled only once every
tensor made from it is gone, otherwise the slot gets a fresh buffer.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import numbers
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch

from fastmask import _native

log = logging.getLogger(__name__)

DecodeError = _native.DecodeError
# Normalisation of the reference code, in 0..1 units.
REFERENCE_MEAN = (0.548, 0.504, 0.479)
REFERENCE_STD = (0.237, 0.247, 0.246)
# The augmentation config, its presets and the eval crop are defined once, in Rust
# (rust/augment/config.rs); this module re-exports them under the names users import.
AugmentConfig = _native.AugmentConfig
PRESETS: tuple[str, ...] = tuple(_native.PRESETS)
# The crop every preset uses in eval mode: the knobs that reproduce it.
EVAL_CROP: dict[str, Any] = dict(_native.EVAL_CROP)


def as_augment(augment: str | AugmentConfig | None) -> AugmentConfig:
    if augment is None:
        return AugmentConfig("none")
    if isinstance(augment, str):
        if augment not in PRESETS:
            raise ValueError(f"augment preset {augment!r}: expected one of {', '.join(PRESETS)}")
        return AugmentConfig(augment)
    return augment


# A crop box in source pixels: (x0, y0, x1, y1), or (x0, y0, x1, y1, angle_deg) turned.
CropBox = tuple[float, float, float, float] | tuple[float, float, float, float, float]


def _box(i: int, b: Sequence[float] | None) -> CropBox | None:
    if b is None:
        return None
    if len(b) not in (4, 5):
        raise ValueError(f"crop box {i} {b!r}: expected (x0, y0, x1, y1) or with angle_deg")
    box = tuple(float(v) for v in b)
    # Turned boxes (5 values) are checked by the native side, which names what is wrong.
    if len(box) == 4 and not all(math.isfinite(v) for v in box):
        raise ValueError(f"crop box {i} {b!r}: expected finite coordinates")
    x0, y0, x1, y1 = box[:4]
    return (x0, y0, x1, y1) if len(box) == 4 else (x0, y0, x1, y1, box[4])


def _image_size(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from one side or a pair; numpy integers and whole floats count."""
    # numbers.Real takes numpy integers too; mypy cannot narrow by it, hence the cast.
    pair = (size, size) if isinstance(size, numbers.Real) else tuple(cast(Iterable[Any], size))

    def whole(v: Any) -> bool:
        return isinstance(v, numbers.Real) and float(v).is_integer() and float(v) >= 1

    if len(pair) != 2 or not all(whole(v) for v in pair):
        raise ValueError(f"image_size {size!r}: expected a side or (height, width), each >= 1")
    return int(pair[0]), int(pair[1])


# The native side keeps a list per class number up to the largest one (24 bytes each): a
# label of 2**40 made it allocate terabytes and abort the process.
MAX_CLASS = 2**24


def _int_labels(labels: Sequence[int] | np.ndarray) -> list[int]:
    """Class labels as ints; a fractional one is refused rather than truncated to another class,
    and one of MAX_CLASS or more rather than left to abort the process."""
    values = np.asarray(labels).ravel()
    out = []
    for i, v in enumerate(values.tolist()):
        if isinstance(v, float) and not v.is_integer():
            raise ValueError(f"label {v} at position {i} is not a whole class number")
        if int(v) >= MAX_CLASS:
            raise ValueError(
                f"label {int(v)} at position {i}: class labels must be below 2**24 "
                "(negative ones, such as -1, are no class)"
            )
        out.append(int(v))
    return out


# Samples one epoch's plan may hold: a weight of 1e30 made the native side try to allocate
# the plan and abort the process.
MAX_PLAN = 2**28


def _oversample(
    oversample: None | str | Mapping[int, float], labels: list[int] | None
) -> None | str | Mapping[int, float]:
    """Refuse an oversample class the native side would allocate a weight list up to, and
    weights that would make an epoch's plan too large to hold."""
    if isinstance(oversample, Mapping):
        for c in oversample:
            if isinstance(c, numbers.Integral) and int(c) >= MAX_CLASS:
                raise ValueError(f"oversample class {c}: class labels must be below 2**24")
        if labels is not None:
            counts = np.bincount([y for y in labels if y >= 0], minlength=1)
            total = 0.0
            for c, n in enumerate(counts.tolist()):
                w = oversample.get(c, 1.0)
                if isinstance(w, numbers.Real) and math.isfinite(w):  # the rest: native error
                    total += round(n * float(w))
            if total > MAX_PLAN:
                raise ValueError(
                    f"oversample {dict(oversample)!r} would draw {total:.3g} samples per "
                    f"epoch, over the limit of 2**28"
                )
    return oversample


def _non_negative(name: str, value: int) -> int:
    if value < 0:
        raise ValueError(f"{name} {value} must be >= 0")
    return value


def _rgb255(v: Sequence[float]) -> tuple[float, float, float]:
    if len(v) != 3:
        raise ValueError(f"mean/std {v!r}: expected three values (R, G, B)")
    return (255.0 * v[0], 255.0 * v[1], 255.0 * v[2])


_warned_unoptimized = False


def warn_if_unoptimized(info: Mapping[str, Any] | None = None) -> bool:
    """Log one warning per process when the native module was built without optimisation
    (a plain `maturin develop` of an older checkout: tens of times slower). True if it is."""
    global _warned_unoptimized
    info = _native.build_info() if info is None else info
    slow = str(info.get("opt_level", "3")) == "0"
    if slow and not _warned_unoptimized:
        _warned_unoptimized = True
        log.warning(
            "fastmask._native is an unoptimised build (opt-level 0, profile %s): the loader "
            "runs tens of times slower. Rebuild with `make build` "
            "(maturin develop --release).",
            info.get("profile", "?"),
        )
    return slow


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class DeviceNormalize:
    """uint8 NCHW (any memory format) -> float32 (x/255 - mean) / std, as one fused kernel
    (`addcmul` of the uint8 batch with per-channel scale and bias already on the device).
    The memory format is kept: NHWC uint8 gives channels_last float."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        m = torch.tensor(_rgb255(mean), dtype=torch.float64)
        sd = torch.tensor(_rgb255(std), dtype=torch.float64)
        self.scale = (1.0 / sd).to(dtype).view(1, 3, 1, 1).to(device)
        self.bias = (-m / sd).to(dtype).view(1, 3, 1, 1).to(device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"DeviceNormalize expects uint8 images, got {images.dtype}")
        return torch.addcmul(self.bias, images, self.scale)


_live_loaders: weakref.WeakSet[Loader] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Workers must stop before the interpreter frees the buffers they write into.
    for loader in list(_live_loaders):
        loader.close()


class Loader:
    """Parallel native data loader. See the module docstring; arguments:

    paths: image files. labels: int class per path (None for inference; yields -1).
    image_size: (height, width) or one int. train: random augmentation and shuffling;
    eval mode crops and resizes only, in order. augment: preset name or AugmentConfig (its
    crop geometry also applies in eval mode). threads: worker threads (default: all cores).
    prefetch: batches decoded ahead. cache / cache_bytes: keep decoded, downscaled images in
    RAM across epochs, up to cache_bytes of pixels. oversample: None, "balanced" or
    {class: weight}. crop_boxes: per path, in source pixels (after EXIF orientation), None
    for the centre crop, (x0, y0, x1, y1) for that box (clamped to the image), or
    (x0, y0, x1, y1, angle_deg) for that box turned about its centre by angle_deg, its x axis
    towards +y (clockwise as seen; `fastmask.faces.alignment`'s angle levels the eyes). A
    turned box is not clamped: beyond the image the edge pixels repeat. In training the random
    resized crop is drawn inside the turned box and the rotation jitter adds to its angle. A
    turned box must be finite, non-empty, within 1e6 pixels and 360 degrees (ValueError
    naming the item otherwise). rank / world_size: DDP shard. drop_last: default True in
    training. device: "cuda" puts batches on the GPU through pinned memory. normalize: float
    output, (x/255 - mean) / std.
    on_error: "raise" (DecodeError naming the file) or "skip" (replace with a sample of
    the same class and log the path once). decode: "cpu" (the native workers) or "gpu"
    (nvJPEG and GPU augmentation for CPU-poor machines, needs CUDA; see gpu_decode.py).
    """

    def __new__(cls, *args: Any, decode: Literal["cpu", "gpu"] = "cpu", **kw: Any) -> Any:
        if decode == "cpu":
            return super().__new__(cls)
        if decode != "gpu":
            raise ValueError(f"decode {decode!r}: expected 'cpu' or 'gpu'")
        from fastmask.gpu_decode import require_cuda

        require_cuda()
        return _gpu_loader(*args, **kw)

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        labels: Sequence[int] | np.ndarray | None = None,
        *,
        batch_size: int = 64,
        image_size: int | tuple[int, int] = (224, 224),
        train: bool = True,
        augment: str | AugmentConfig | None = "mask",
        threads: int | None = None,
        seed: int = 0,
        prefetch: int = 4,
        cache: bool = False,
        cache_bytes: int | None = None,
        oversample: None | Literal["balanced"] | Mapping[int, float] = None,
        crop_boxes: Sequence[Sequence[float] | None] | None = None,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        device: str | torch.device | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        normalize: bool = False,
        mean: Sequence[float] = REFERENCE_MEAN,
        std: Sequence[float] = REFERENCE_STD,
        shuffle: bool | None = None,
        apply_exif: bool = True,
        decode: Literal["cpu", "gpu"] = "cpu",
    ) -> None:
        warn_if_unoptimized()
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error {on_error!r}: expected 'raise' or 'skip'")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        if cache_bytes is not None and cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        self.height, self.width = _image_size(image_size)
        if threads is not None and threads < 0:
            raise ValueError(f"threads must be >= 0 (0 or None: all cores), got {threads}")
        _non_negative("seed", seed)
        _non_negative("rank", rank)
        self.batch_size = batch_size
        self.train = train
        self.augment = as_augment(augment)
        self.threads = threads or default_threads()
        self.prefetch = prefetch
        self.device = torch.device(device) if device is not None else None
        self.normalize = normalize
        self._cuda = self.device is not None and self.device.type == "cuda"
        # On the CPU the workers write normalised float32; to a GPU uint8 travels (4x fewer
        # bytes) and is normalised there, in the copy stream: no float pass on the CPU.
        self._native_float = normalize and not self._cuda
        self._device_normalize = (
            DeviceNormalize(mean, std, self.device) if normalize and self._cuda else None
        )
        self._ring = prefetch + 2  # + the batch the consumer holds + the one it just dropped
        label_list = None if labels is None else _int_labels(labels)
        if label_list is not None and len(label_list) != len(paths):
            raise ValueError(f"{len(label_list)} labels for {len(paths)} paths")
        self._pipe = _native.Pipeline(
            [os.fspath(p) for p in paths],
            label_list,
            None if crop_boxes is None else [_box(i, b) for i, b in enumerate(crop_boxes)],
            batch_size=batch_size,
            image_size=(self.height, self.width),
            threads=self.threads,
            train=train,
            augment=self.augment,
            shuffle=train if shuffle is None else shuffle,
            oversample=_oversample(oversample, label_list),
            seed=seed,
            rank=rank,
            world_size=world_size,
            drop_last=train if drop_last is None else drop_last,
            ring=self._ring,
            cache=cache,
            cache_bytes=cache_bytes,
            apply_exif=apply_exif,
            skip_errors=on_error == "skip",
            normalize=(_rgb255(mean), _rgb255(std)) if self._native_float else None,
        )
        self._epoch = 0
        # Position: the next iteration starts at batch _start; _position counts batches handed out.
        self._start = 0
        self._position = 0
        self._num_batches = self._pipe.start_epoch(0)
        self._token = 0
        # Native calls that block without the GIL (wait, start_epoch, cancel) hold the pipe;
        # a close() meanwhile (a signal handler, another thread) is left to the call in
        # progress, which closes when it returns ("Already borrowed" otherwise).
        self._lock = threading.RLock()
        self._busy = 0
        self._close_pending = False
        self._host: list[tuple[np.ndarray, np.ndarray] | None] = [None] * self._ring
        self._held: list[tuple[weakref.ref[np.ndarray], ...] | None] = [None] * self._ring
        self._events: list[Any] = [None] * self._ring
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._reported: set[str] = set()
        for slot in range(self._ring):
            self._new_buffers(slot)
        _live_loaders.add(self)

    # -- buffers ---------------------------------------------------------------------------

    def _new_buffers(self, slot: int) -> None:
        shape = (self.batch_size, self.height, self.width, 3)
        dtype = torch.float32 if self._native_float else torch.uint8
        images = torch.empty(shape, dtype=dtype, pin_memory=self._cuda).numpy()
        labels = torch.empty(self.batch_size, dtype=torch.int64, pin_memory=self._cuda).numpy()
        self._pipe.set_slot(slot, images.view(np.uint8), labels)
        self._host[slot] = (images, labels)
        self._held[slot] = None

    def _free_slot(self, slot: int) -> None:
        """Make `slot` safe to refill: its GPU copy done, and no tensor of it still alive."""
        if self._events[slot] is not None:
            self._events[slot].synchronize()
            self._events[slot] = None
        held = self._held[slot]
        if held is not None and any(ref() is not None for ref in held):
            self._new_buffers(slot)  # the consumer kept that batch: never overwrite it
        self._held[slot] = None

    # -- iteration -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._num_batches

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def samples_per_epoch(self) -> int:
        """Samples this rank yields per epoch (after oversampling and sharding)."""
        return int(self._pipe.plan_len)

    @property
    def cache_bytes_used(self) -> int:
        return int(self._pipe.cache_bytes_used)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose plan and augmentation the next iteration uses."""
        self._epoch = _non_negative("epoch", int(epoch))
        self._start = self._position = 0

    def state_dict(self) -> dict[str, int]:
        """The position: epoch, and batches of it handed out so far (as torchdata.nodes)."""
        return {"epoch": self._epoch, "batch": self._position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume at a position: the next iteration yields batches `batch`.. of `epoch`.

        Every sample's choice and augmentation derive from (seed, epoch, position), so the
        skipped batches are never decoded and the rest equal an uninterrupted epoch's.
        """
        epoch, batch = _non_negative("epoch", int(state["epoch"])), int(state["batch"])
        if batch < 0:
            raise ValueError(f"loader position batch {batch} must be >= 0")
        self._epoch, self._start, self._position = epoch, batch, batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._pipe.closed:
            raise RuntimeError("loader is closed")
        self._token += 1
        with self._native() as pipe:
            self._num_batches = pipe.start_epoch(self._epoch)
        if self._start > self._num_batches:
            raise ValueError(
                f"loader position batch {self._start} is past epoch {self._epoch}'s "
                f"{self._num_batches} batches"
            )
        for slot in range(self._ring):
            self._free_slot(slot)
        start, self._start = self._start, 0
        self._position = start
        return self._batches(self._token, start)

    def _batches(self, token: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self._num_batches
        scheduled = start
        try:
            for k in range(start, n):
                if token != self._token or self._pipe.closed:
                    raise RuntimeError("this iteration was superseded by a newer iter() or close()")
                while scheduled < min(n, k + self.prefetch):
                    slot = scheduled % self._ring
                    self._free_slot(slot)
                    self._pipe.schedule(scheduled, slot)
                    scheduled += 1
                with self._native() as pipe:
                    count = pipe.wait(k)
                if token != self._token:  # closed (or superseded) while waiting
                    raise RuntimeError("this iteration was superseded by a newer iter() or close()")
                self._report_skipped()
                self._position = k + 1
                yield self._deliver(k % self._ring, count)
        finally:
            if token == self._token and not self._pipe.closed:
                with self._native() as pipe:
                    pipe.cancel()

    def _report_skipped(self) -> None:
        for message in self._pipe.take_skipped():
            if message not in self._reported:
                self._reported.add(message)
                log.warning("replaced a sample that failed: %s", message)

    def _deliver(self, slot: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        host = self._host[slot]
        if host is None:  # closed by another thread since the wait returned
            raise RuntimeError("loader is closed")
        images_np, labels_np = host[0][:count], host[1][:count]
        self._held[slot] = (weakref.ref(images_np), weakref.ref(labels_np))
        images = torch.from_numpy(images_np).permute(0, 3, 1, 2)  # NHWC memory = channels_last
        labels = torch.from_numpy(labels_np)
        if self._cuda:
            assert self._stream is not None
            with torch.cuda.stream(self._stream):
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self._stream)  # the slot is free once the copy is done
                if self._device_normalize is not None:
                    images = self._device_normalize(images)
            self._events[slot] = event
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self._stream)
            images.record_stream(current)
            labels.record_stream(current)
            self._held[slot] = None  # the GPU copy is the consumer's; the event guards the slot
        return images, labels

    # -- lifetime --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _native(self) -> Iterator[Any]:
        """The pipe, for a call that blocks without the GIL; a close() requested meanwhile
        happens when it returns."""
        with self._lock:
            if self._pipe.closed or self._close_pending:
                raise RuntimeError("loader is closed")
            self._busy += 1
        try:
            yield self._pipe
        finally:
            with self._lock:
                self._busy -= 1
                close_now = self._close_pending and self._busy == 0
            if close_now:
                self.close()

    def close(self) -> None:
        """Stop the workers and free the buffers. Safe to call more than once, and from a
        signal handler or another thread while a batch is awaited: the iteration then stops
        with a RuntimeError, closing the loader as its wait returns."""
        pipe = getattr(self, "_pipe", None)
        if pipe is None:  # __init__ failed before the pipe
            return
        with getattr(self, "_lock", contextlib.nullcontext()):
            self._token = getattr(self, "_token", 0) + 1
            if getattr(self, "_busy", 0):
                self._close_pending = True
                return
            self._close_pending = False
        if not pipe.closed:
            pipe.close()
        # The ring's buffers go now, not when the object does (a batch still held keeps its
        # own); a GPU copy still reading one finishes first.
        for event in getattr(self, "_events", []):
            if event is not None:
                event.synchronize()
        ring = len(getattr(self, "_host", []))
        self._host, self._held, self._events = [None] * ring, [None] * ring, [None] * ring
        _live_loaders.discard(self)

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # never raise from a finaliser
            self.close()


def _gpu_loader(
    paths: Sequence[str | os.PathLike[str]],
    labels: Sequence[int] | np.ndarray | None = None,
    **kw: Any,
) -> Any:
    """Loader(decode="gpu"): the same arguments and defaults (those that apply), served by
    gpu_decode.GpuJpegLoader."""
    from fastmask.gpu_decode import GpuJpegLoader

    size = kw.get("image_size", (224, 224))
    size = (size, size) if isinstance(size, int) else tuple(size)
    train = bool(kw.get("train", True))
    boxes = kw.get("crop_boxes")
    plain: list[tuple[float, float, float, float] | None] | None = None
    if boxes is not None:
        plain = []
        for i, b in enumerate(boxes):
            box = _box(i, b)
            if box is not None and len(box) == 5:
                raise ValueError(
                    f"crop box {i} {b!r}: decode='gpu' takes plain (x0, y0, x1, y1) boxes, "
                    "not turned ones (face-aligned); use the CPU decode"
                )
            plain.append(None if box is None else (box[0], box[1], box[2], box[3]))
    device = kw.get("device")
    return GpuJpegLoader(
        paths, labels, augment=as_augment(kw.get("augment", "mask")),
        batch_size=kw.get("batch_size", 64), image_size=(int(size[0]), int(size[1])),
        train=train, seed=kw.get("seed", 0),
        device=torch.device(device) if device is not None else torch.device("cuda"),
        normalize=kw.get("normalize", False), mean=kw.get("mean", REFERENCE_MEAN),
        std=kw.get("std", REFERENCE_STD),
        crop_boxes=plain,
        oversample=kw.get("oversample"), rank=kw.get("rank", 0),
        world_size=kw.get("world_size", 1),
        drop_last=train if kw.get("drop_last") is None else kw["drop_last"],
        shuffle=train if kw.get("shuffle") is None else kw["shuffle"],
        threads=kw.get("threads") or default_threads(),
    )  # fmt: skip


def decode(path: str | Path, apply_exif: bool = True) -> np.ndarray:
    """Decode one image file to RGB uint8 [H, W, 3] with the native decoder."""
    return _native.decode_file(os.fspath(path), apply_exif)
