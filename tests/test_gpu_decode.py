"""decode="gpu": the clear error without CUDA, and the GPU path's code run on the CPU."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

from fastmask import _native
from fastmask.gpu_decode import GpuJpegLoader, crop_region
from fastmask.loader import REFERENCE_MEAN, REFERENCE_STD, AugmentConfig, Loader


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("gpujpegs")
    yy, xx = np.mgrid[0:96, 0:64]
    paths = []
    for i in range(10):
        img = np.stack([(xx * 3 + i) % 256, (yy * 2) % 256, (xx + yy) % 256], -1)
        path = root / f"{i}.jpg"
        Image.fromarray(img.astype(np.uint8)).save(path, quality=95)
        paths.append(str(path))
    return paths


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_gpu_decode_without_cuda_is_a_clear_error_naming_the_option(jpegs):
    with pytest.raises(RuntimeError, match='decode="gpu".*CUDA'):
        Loader(jpegs, decode="gpu")
    with pytest.raises(ValueError, match="decode 'tpu'"):
        Loader(jpegs, decode="tpu")  # type: ignore[arg-type]


def make(jpegs, **kw) -> GpuJpegLoader:
    args = dict(augment=AugmentConfig("none"), batch_size=4, image_size=(32, 24), train=False,
                seed=0, device=torch.device("cpu"), normalize=False, mean=REFERENCE_MEAN,
                std=REFERENCE_STD, threads=2, shuffle=False)  # fmt: skip
    args.update(kw)
    return GpuJpegLoader(jpegs, list(range(len(jpegs))), **args)


def test_gpu_path_eval_matches_the_cpu_path_closely(jpegs):
    with make(jpegs) as loader:
        assert len(loader) == 3
        batches = list(loader)
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.uint8 and x.shape == (10, 3, 32, 24)
    assert torch.cat([b[1] for b in batches]).tolist() == list(range(10))  # eval: in order
    with Loader(jpegs, batch_size=10, image_size=(32, 24), train=False, augment="none") as cpu:
        ref, _ = next(iter(cpu))
    # Different decoders (nvJPEG/libjpeg vs zune) and resize kernels: close, not equal.
    assert (x.float() - ref.float()).abs().mean() < 3.0


def test_gpu_path_train_is_seeded_and_normalised(jpegs):
    cfg = AugmentConfig("none", rrc_p=1.0, hflip_p=0.5, brightness=0.2, contrast=0.2,
                        saturation=0.2, jitter_p=1.0)  # fmt: skip
    runs = []
    for _ in range(2):
        with make(jpegs, augment=cfg, train=True, seed=5, normalize=True) as loader:
            loader.set_epoch(1)
            runs.append([b for b in loader])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(*runs, strict=True))
    x = runs[0][0][0]
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert -3.0 < float(x.mean()) < 3.0
    rotating = AugmentConfig("none", rotate_deg=10.0, rotate_p=0.5)
    with pytest.raises(ValueError, match="rotate_p"):
        make(jpegs, augment=rotating, train=True)


def test_crop_region_follows_the_native_one():
    cfg = AugmentConfig("none", center_crop=(1.0, 0.75), center_offset_y=0.0)
    assert crop_region(512, 384, None, cfg) == (0.0, 64.0, 384.0, 384.0)
    assert crop_region(512, 384, (-5.0, 10.0, 100.0, 600.0), cfg) == (0.0, 10.0, 100.0, 502.0)
    # A box wholly outside falls back to the centre crop, as in Rust.
    assert crop_region(512, 384, (900.0, 900.0, 950.0, 950.0), cfg)[2:] == (384.0, 384.0)
    assert len(_native.epoch_plan([0, 1, 2], shuffle=False)) == 3


def test_cuda_batches_are_decoded_on_the_loaders_drained_stream(jpegs, monkeypatch):
    """nvJPEG's hardware decoder ignores the order of work queued on its stream and writes
    into blocks the allocator recycled on the caller's stream (pytorch/vision#9606). So on
    CUDA each batch is decoded on the loader's own stream, drained first, and handed to the
    consumer's stream with wait_stream + record_stream. Streams are faked: no GPU here."""
    events: list[tuple[str, ...]] = []

    class FakeStream:
        def __init__(self, name: str) -> None:
            self.name = name

        def synchronize(self) -> None:
            events.append(("synchronize", self.name))

        def wait_stream(self, other: FakeStream) -> None:
            events.append(("wait", self.name, other.name))

    class FakeTensor:
        def __init__(self, name: str) -> None:
            self.name = name

        def record_stream(self, stream: FakeStream) -> None:
            events.append(("record", self.name, stream.name))

    current = [FakeStream("training")]

    @contextlib.contextmanager
    def use(stream: FakeStream):
        before, current[0] = current[0], stream
        try:
            yield
        finally:
            current[0] = before

    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: FakeStream("loader"))
    monkeypatch.setattr(torch.cuda, "stream", use)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current[0])
    loader = make(jpegs, device=torch.device("cuda"))

    def decode_augment(idx, data, k):
        events.append(("decode", current[0].name))
        return FakeTensor("images"), FakeTensor("labels")

    monkeypatch.setattr(loader, "_decode_augment", decode_augment)
    with loader:
        assert len(list(loader)) == 3
    one_batch = [
        ("synchronize", "loader"),
        ("decode", "loader"),
        ("wait", "training", "loader"),
        ("record", "images", "training"),
        ("record", "labels", "training"),
    ]
    assert events == one_batch * 3
