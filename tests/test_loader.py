"""The native loader through its Python API: batches, determinism, cache, faults."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import fastmask
from fastmask import _native
from fastmask.loader import EVAL_CROP, PRESETS, AugmentConfig, DecodeError, Loader

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[int]]:
    """40 photo-like 384x512 JPEGs (some PNG), 3 unbalanced classes."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:384]
    paths, labels = [], []
    for i in range(40):
        c = 0 if i < 28 else (1 if i < 36 else 2)
        base = np.stack(
            [(xx * (1 + c) + i * 7) % 256, (yy + 40 * c) % 256, (xx + yy + i) % 256], -1
        ).astype(np.uint8)
        noisy = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        path = root / f"img{i:02d}.{'png' if i % 10 == 9 else 'jpg'}"
        Image.fromarray(noisy).save(path, quality=90)
        paths.append(str(path))
        labels.append(c)
    return paths, labels


def collect(loader: Loader) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, y in loader:
        xs.append(x.numpy().copy())
        ys.append(y.numpy().copy())
    return np.concatenate(xs), np.concatenate(ys)


# -- decode ---------------------------------------------------------------------------------


def pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode.startswith("I"):  # PIL clips 16-bit gray to 255 in convert(); scale instead
            gray = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


DECODABLE = sorted(
    p for p in DATA.glob("*") if p.suffix in (".jpg", ".png") and not p.name.startswith("bad_")
)


@pytest.mark.parametrize("path", DECODABLE, ids=lambda p: p.name)
def test_decode_parity_with_pil(path: Path):
    ours = fastmask.loader.decode(path).astype(np.int16)
    ref = pil_rgb(path).astype(np.int16)
    assert ours.shape == ref.shape
    mad = np.abs(ours - ref).mean(axis=(0, 1))
    assert (mad <= 1.0).all(), f"{path.name}: mean abs diff per channel {mad}"


def test_exif_orientation_can_be_switched_off():
    rotated = DATA / "exif_6.jpg"
    on = fastmask.loader.decode(rotated)
    off = fastmask.loader.decode(rotated, apply_exif=False)
    assert on.shape[:2] == off.shape[:2][::-1]


@pytest.mark.parametrize("name", ["bad_corrupt.jpg", "bad_truncated.png", "bad_zero.jpg",
                                  "bad_text.jpg", "missing.jpg"])  # fmt: skip
def test_decode_errors_name_the_file(name: str):
    with pytest.raises(DecodeError, match=name) as info:
        fastmask.loader.decode(DATA / name)
    assert isinstance(info.value, ValueError)
    assert fastmask.DecodeError is DecodeError


# -- sampler --------------------------------------------------------------------------------


def test_epoch_plan_balanced_and_sharded():
    labels = [0] * 30 + [1] * 6 + [2] * 2
    plan = _native.epoch_plan(labels, oversample="balanced", seed=3)
    assert np.bincount(np.asarray(labels)[plan]).tolist() == [30, 30, 30]
    shards = [
        _native.epoch_plan(labels, rank=r, world_size=2, drop_last=True, batch_size=4)
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 16
    assert not set(shards[0]) & set(shards[1])
    w = _native.epoch_plan(labels, oversample={1: 2.0, 2: 0.5})
    assert np.bincount(np.asarray(labels)[w]).tolist() == [30, 12, 1]
    with pytest.raises(ValueError, match="oversample"):
        _native.epoch_plan(labels, oversample="often")


# -- loader ---------------------------------------------------------------------------------


def test_batches_shapes_order_and_labels(images):
    paths, labels = images
    with Loader(paths, labels, batch_size=16, image_size=(64, 48), train=False) as loader:
        assert len(loader) == 3
        batches = list(loader)
    x, y = batches[0]
    assert x.dtype == torch.uint8 and x.shape == (16, 3, 64, 48)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert [b[0].shape[0] for b in batches] == [16, 16, 8]
    assert torch.cat([b[1] for b in batches]).tolist() == labels  # eval: in order


def test_eval_matches_single_image_path(images):
    paths, labels = images
    with Loader(paths[:4], labels[:4], batch_size=4, image_size=56, train=False) as loader:
        x, _ = next(iter(loader))
    for i in range(4):
        one = _native.augment_image(
            fastmask.loader.decode(paths[i]), (56, 56), train=False, preset="mask"
        )
        diff = np.abs(x[i].permute(1, 2, 0).numpy().astype(int) - one.astype(int))
        assert diff.mean() < 3.0  # noisy pixels: the loader resizes twice (working scale first)


def test_image_sizes_are_height_width_across_the_boundary(images):
    paths, labels = images
    assert _native.augment_image(np.zeros((20, 10, 3), np.uint8), (6, 4)).shape == (6, 4, 3)
    # 384x512 (w x h): a quarter-scale DCT decode is the smallest at least 128 high, 96 wide.
    assert _native.decode_file(paths[0], min_size=(128, 96)).shape == (128, 96, 3)
    with Loader(paths[:2], labels[:2], batch_size=2, image_size=(30, 20), train=False) as loader:
        assert next(iter(loader))[0].shape == (2, 3, 30, 20)


def test_same_seed_same_batches_whatever_the_threads(images):
    paths, labels = images
    kw = dict(batch_size=8, image_size=64, train=True, augment="mask", seed=5)
    runs = []
    for threads in (1, 2, 3):
        with Loader(paths, labels, threads=threads, **kw) as loader:
            loader.set_epoch(1)
            runs.append(collect(loader))
    for x, y in runs[1:]:
        assert np.array_equal(x, runs[0][0]) and np.array_equal(y, runs[0][1])
    with Loader(paths, labels, threads=2, **kw) as loader:
        loader.set_epoch(2)
        other = collect(loader)
    assert not np.array_equal(other[0], runs[0][0])


def test_train_drops_last_and_shuffles(images):
    paths, labels = images
    with Loader(paths, labels, batch_size=16, image_size=32, augment="none") as loader:
        assert len(loader) == 2 and loader.samples_per_epoch == 32
        _, y = collect(loader)
    assert len(y) == 32 and y.tolist() != sorted(y.tolist())


def test_balanced_oversampling_through_the_loader(images):
    paths, labels = images
    with Loader(paths, labels, batch_size=12, image_size=32, oversample="balanced") as loader:
        _, y = collect(loader)
    assert np.bincount(y).tolist() == [28, 28, 28]


def test_ddp_shards_match_single_process_count(images):
    paths, labels = images
    seen = []
    for rank in range(2):
        with Loader(paths, labels, batch_size=5, image_size=32, rank=rank, world_size=2,
                    drop_last=False, augment="none") as loader:  # fmt: skip
            seen.append(loader.samples_per_epoch)
            collect(loader)
    with Loader(paths, labels, batch_size=5, image_size=32, drop_last=False) as single:
        assert sum(seen) == single.samples_per_epoch == 40


def test_cache_is_deterministic_close_to_uncached_and_within_its_cap(images):
    paths, labels = images
    kw = dict(batch_size=8, image_size=(96, 64), train=True, seed=1, threads=2)
    with Loader(paths, labels, **kw) as plain:
        uncached = collect(plain)[0]
    with Loader(paths, labels, cache=True, **kw) as cached:
        ref = collect(cached)[0]  # the first epoch fills the cache
        used = cached.cache_bytes_used
        assert np.array_equal(collect(cached)[0], ref)  # the second epoch reads it
        assert cached.cache_bytes_used == used > 0
    # cached images are stored at a working scale, resized once more on the way out
    assert np.abs(ref.astype(int) - uncached.astype(int)).mean() < 4.0
    with Loader(paths, labels, cache=True, cache_bytes=used // 4, **kw) as capped:
        assert np.array_equal(collect(capped)[0], ref)  # the same whatever fits in the cache
        assert 0 < capped.cache_bytes_used <= used // 4
    # the cache holds pixels only: its size is the sum of the working images' bytes
    per_image = used / len(paths)
    assert per_image <= 384 * 512 * 3


def test_held_batches_are_never_overwritten(images):
    paths, labels = images
    kw = dict(batch_size=4, image_size=32, train=True, seed=2, prefetch=1)
    with Loader(paths, labels, **kw) as loader:
        copies = collect(loader)
        held = list(loader)  # keep every batch alive while later ones are produced
    x = torch.cat([b[0] for b in held]).numpy()
    assert np.array_equal(x, copies[0])


def test_augment_config_knobs_and_errors(images):
    paths, labels = images
    flip = AugmentConfig("none", hflip_p=1.0, rrc_p=0.0)
    with Loader(paths[:4], labels[:4], batch_size=4, image_size=32, augment=flip) as a:
        flipped = next(iter(a))[0]
    with Loader(paths[:4], labels[:4], batch_size=4, image_size=32, train=False) as b:
        plain = next(iter(b))[0]
    assert torch.equal(flipped, plain.flip(3))
    with pytest.raises(ValueError, match="unknown augment knob"):
        _native.augment_image(np.zeros((8, 8, 3), np.uint8), (4, 4), knobs={"blur": 1.0})
    with pytest.raises(ValueError, match="preset"):
        Loader(paths, labels, augment="heavy")
    with pytest.raises(ValueError, match="labels for"):
        Loader(paths, labels[:3])


def test_python_sees_exactly_the_native_knobs_and_presets():
    knobs = _native.AUGMENT_KNOBS  # made from the one knob list in rust/augment/config.rs
    getters = {n for n, v in vars(AugmentConfig).items() if type(v).__name__ == "getset_descriptor"}
    assert getters == {*knobs, "preset"} and len(knobs) == len(set(knobs))
    assert fastmask.loader.PRESETS == _native.PRESETS and len(PRESETS) >= 5
    for name in PRESETS:
        preset = AugmentConfig(name)
        # Every knob goes in through the constructor and comes back through its getter.
        explicit = AugmentConfig("none", **{k: getattr(preset, k) for k in knobs})
        assert all(getattr(explicit, k) == getattr(preset, k) for k in knobs), name
        assert explicit.knobs() == {k: getattr(preset, k) for k in knobs}
        as_lists = {k: list(v) if isinstance(v, tuple) else v for k, v in explicit.knobs().items()}
        assert {k: as_lists[k] for k in EVAL_CROP} == EVAL_CROP, name  # every preset's eval crop
    assert EVAL_CROP == {"center_crop": [1.0, 0.75], "center_offset_y": -0.05}
    config = AugmentConfig("mask", hflip_p=1.0, rrc_p=None)
    assert (config.preset, config.knobs(), config.hflip_p) == ("mask", {"hflip_p": 1.0}, 1.0)
    assert (
        config == AugmentConfig("mask", hflip_p=1.0)
        and len({config, AugmentConfig("mask", hflip_p=1.0)}) == 1
    )
    with pytest.raises(ValueError, match="unknown augment knob"):
        AugmentConfig("none", blur=1.0)


def test_normalize_on_cpu_matches_manual(images):
    paths, labels = images
    kw = dict(batch_size=8, image_size=32, seed=4)
    with Loader(paths[:8], labels[:8], normalize=True, **kw) as loader:
        x, _ = next(iter(loader))
    with Loader(paths[:8], labels[:8], **kw) as loader:
        raw, _ = next(iter(loader))
    mean = torch.tensor(fastmask.loader.REFERENCE_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(fastmask.loader.REFERENCE_STD).view(1, 3, 1, 1) * 255
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x, (raw.float() - mean) / std)


def test_corrupt_file_raises_at_its_batch_then_loader_still_works(images, tmp_path: Path):
    paths, labels = images
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(Path(paths[0]).read_bytes()[:300])
    mixed = paths[:8] + [str(bad)] + paths[9:16]
    with Loader(mixed, labels[:16], batch_size=8, image_size=32, train=False) as loader:
        it = iter(loader)
        next(it)  # batch 0 is fine
        with pytest.raises(DecodeError, match="broken.jpg"):
            next(it)
        assert len(list(Loader(paths[:8], labels[:8], batch_size=8, train=False))) == 1
        with pytest.raises(DecodeError):
            list(loader)  # iterating again works and fails at the same place


def test_skip_replaces_with_same_class_and_logs_once(images, tmp_path: Path, caplog):
    paths, labels = images
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    mixed = [*paths[:30], str(bad)]
    ys = [*labels[:30], 1]  # class 1 has other members to stand in
    with Loader(mixed, ys, batch_size=31, image_size=32, train=False, on_error="skip") as ld:
        for _ in range(2):
            _, y = next(iter(ld))
            assert y.tolist() == ys
    warnings = [r for r in caplog.records if "empty.jpg" in r.getMessage()]
    assert len(warnings) == 1


def test_closed_loader_refuses(images):
    paths, labels = images
    loader = Loader(paths, labels, batch_size=8, image_size=32)
    loader.close()
    loader.close()
    with pytest.raises(RuntimeError, match="closed"):
        iter(loader)


def test_close_frees_the_buffers_but_not_a_held_batch(images):
    # close() stopped the workers but the loader kept its ring of batch buffers (prefetch + 2
    # batches: 230 MB for 64 float images at 224 px) until the object itself was collected.
    import gc
    import weakref

    paths, labels = images
    loader = Loader(paths, labels, batch_size=8, image_size=32, prefetch=2)
    held, _ = next(iter(loader))
    copy = held.clone()
    buffers = [weakref.ref(host[0]) for host in loader._host if host is not None]
    loader.close()
    gc.collect()
    alive = [ref for ref in buffers if ref() is not None]
    assert len(alive) == 1  # only the slot of the batch still held
    assert torch.equal(held, copy)
    loader.close()


def test_bad_sizes_threads_and_labels_are_clear_value_errors(images):
    # A negative size or thread count reached the native code as an OverflowError ("can't
    # convert negative int to unsigned"), a numpy integer size was "not iterable", and a
    # fractional label was truncated to another class without a word.
    paths, labels = images
    for kw, message in [
        ({"image_size": -3}, "image_size"),
        ({"image_size": (32, -1)}, "image_size"),
        ({"threads": -1}, "threads"),
    ]:
        with pytest.raises(ValueError, match=message):
            Loader(paths, labels, batch_size=8, **{"image_size": 32, **kw})
    with pytest.raises(ValueError, match=r"label 0\.5 at position 0"):
        Loader(paths, [0.5] + labels[1:], batch_size=8, image_size=32)
    for bad in [(0, 0, float("nan"), 40), (0, 0, 30, float("inf"))]:  # turned: test_face_aligned
        boxes = [bad] + [None] * (len(paths) - 1)
        with pytest.raises(ValueError, match="crop box 0 .*finite"):
            Loader(paths, labels, batch_size=8, image_size=32, crop_boxes=boxes)
    whole = np.asarray(labels, dtype=np.float64)  # e.g. a pandas column with a NaN dropped
    with Loader(paths, whole, batch_size=8, image_size=np.int64(32), train=False) as loader:
        x, y = next(iter(loader))
    assert tuple(x.shape[2:]) == (32, 32) and y.tolist() == labels[:8]


def test_state_dict_is_the_position_after_set_epoch_and_load_state_dict(images):
    # state_dict() kept the previous epoch's batch count after set_epoch() or
    # load_state_dict(): a checkpoint taken there resumed batches too far into the epoch.
    paths, labels = images
    with Loader(paths, labels, batch_size=8, image_size=32, threads=2) as loader:
        n = sum(1 for _ in loader)
        assert loader.state_dict() == {"epoch": 0, "batch": n}
        loader.set_epoch(1)
        assert loader.state_dict() == {"epoch": 1, "batch": 0}
        loader.load_state_dict({"epoch": 3, "batch": 1})
        assert loader.state_dict() == {"epoch": 3, "batch": 1}
        it = iter(loader)
        next(it)
        assert loader.state_dict() == {"epoch": 3, "batch": 2}


# -- faults in a child process: a hang fails the test through the timeout -------------------


def run_child(code: str, images, timeout: float = 60.0, **kw) -> subprocess.CompletedProcess:
    paths, labels = images
    prelude = "import json, os, sys\nfrom fastmask.loader import Loader\n"
    prelude += f"paths, labels = json.loads({json.dumps(json.dumps([paths, labels]))})\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, **kw,
    )  # fmt: skip


def test_huge_class_labels_and_negative_seeds_are_clear_value_errors(images):
    # A label or oversample class of 2**40 made the native side allocate a list per class up
    # to it, and a weight of 1e30 a plan that size: "memory allocation ... failed" and the
    # process aborted. A negative seed, rank or
    # epoch reached it as an OverflowError ("can't convert negative int to unsigned").
    out = run_child(
        """
        for kw in [dict(labels=[2**40] + labels[1:]), dict(oversample={2**40: 1.0}),
                   dict(oversample={0: 1e30})]:
            try:
                Loader(paths, kw.pop("labels", labels), batch_size=8, image_size=32, **kw)
            except ValueError as err:
                print(err)
        """,
        images,
    )
    assert out.returncode == 0, out.stderr
    first, second, third = out.stdout.splitlines()
    assert f"label {2**40} at position 0" in first and "2**24" in first
    assert f"oversample class {2**40}" in second and "2**24" in second
    assert "would draw 2.8e+31 samples per epoch" in third, third
    paths, labels = images
    for kw, message in [({"seed": -1}, "seed"), ({"rank": -1}, "rank")]:
        with pytest.raises(ValueError, match=message):
            Loader(paths, labels, batch_size=8, image_size=32, **kw)
    with Loader(paths, labels, batch_size=8, image_size=32) as loader:
        with pytest.raises(ValueError, match="epoch -1"):
            loader.set_epoch(-1)
        with pytest.raises(ValueError, match="epoch -2"):
            loader.load_state_dict({"epoch": -2, "batch": 0})


def test_break_exception_and_exit_mid_epoch_do_not_hang(images):
    out = run_child(
        """
        ld = Loader(paths, labels, batch_size=4, image_size=64, prefetch=8)
        for i, _ in enumerate(ld):
            if i == 1:
                break
        try:
            for _ in ld:
                raise KeyError("consumer failed")
        except KeyError:
            pass
        again = Loader(paths, labels, batch_size=4, image_size=64)
        it = iter(again)
        next(it)
        del ld
        print("ok")
        # exit with `again` mid-epoch and its workers busy
        """,
        images,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_keyboard_interrupt_while_waiting(images):
    out = run_child(
        """
        import signal, threading
        # Work for many seconds, so the SIGINT at 0.5 s lands mid-epoch even on a fast machine.
        ld = Loader(paths * 400, labels * 400, batch_size=500, image_size=256, threads=1)
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        try:
            for _ in ld:
                pass
            print("finished")
        except KeyboardInterrupt:
            print("interrupted")
        """,
        images,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "interrupted"


def test_close_from_a_signal_handler_or_another_thread_while_waiting(images):
    # close() while a batch was awaited (a SIGTERM handler's cleanup, a watchdog thread) failed
    # with "RuntimeError: Already borrowed" and left the loader open; the iteration now stops
    # with "superseded by ... close()" and the loader ends closed.
    out = run_child(
        """
        import signal, threading, time
        big = dict(batch_size=200, image_size=256, threads=1, prefetch=1)
        ld = Loader(paths * 100, labels * 100, **big)
        signal.signal(signal.SIGALRM, lambda *_: ld.close())
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        try:
            for _ in ld:
                pass
        except RuntimeError as err:
            print("signal:", err)
        print("closed" if ld._pipe.closed else "open")
        ld = Loader(paths * 100, labels * 100, **big)
        errors = []
        def consume():
            try:
                for _ in ld:
                    pass
            except RuntimeError as err:
                errors.append(str(err))
        t = threading.Thread(target=consume)
        t.start()
        time.sleep(0.3)
        ld.close()
        t.join(60)
        print("thread:", errors[0] if errors else "finished")
        print("closed" if ld._pipe.closed else "open")
        """,
        images,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("signal:") and "close()" in lines[0], lines
    assert lines[2].startswith("thread:") and "close()" in lines[2], lines
    assert lines[1] == lines[3] == "closed", lines


def test_fork_after_pool_started(images):
    out = run_child(
        """
        import multiprocessing as mp
        parent = Loader(paths, labels, batch_size=8, image_size=32)
        next(iter(parent))  # the parent's pool is running
        def child(q):
            try:
                next(iter(parent))
                q.put("inherited loader worked?!")
            except RuntimeError as err:
                msg = "refused" if "forked" in str(err) else str(err)
            with Loader(paths, labels, batch_size=8, image_size=32) as fresh:
                n = sum(len(y) for _, y in fresh)
            q.put(f"{msg} {n}")
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        print(q.get(timeout=30))
        p.join(30)
        print(p.exitcode)
        """,
        images,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused", "40", "0"]


# -- ROI decode and device normalisation ------------------------------------------------------


@pytest.mark.parametrize("name", ["photo_384x512.jpg", "jpeg_restart.jpg", "jpeg_cmyk.jpg",
                                  "jpeg_progressive.jpg", "exif_6.jpg"])  # fmt: skip
def test_roi_decode_keeps_the_regions_pixels(name: str):
    full = _native.decode_file(DATA / name)
    h, w = full.shape[:2]
    for x0, y0, x1, y1 in [(0, h // 8, w, h - h // 8), (w // 4, 0, w // 2, h // 3), (w, h, w, h)]:
        part = _native.decode_file(DATA / name, roi=(x0, y0, x1, y1))
        assert part.shape == full.shape
        np.testing.assert_array_equal(part[y0:y1, x0:x1], full[y0:y1, x0:x1])


def test_loader_batches_do_not_depend_on_the_roi_cut(images):
    """Uncached eval batches (full-scale ROI decode, 200 px from a 384x384 crop) equal the
    single-image path on a full decode, byte for byte."""
    paths, labels = images
    knobs = {"center_crop": (1.0, 0.75), "center_offset_y": 0.0}
    cfg = AugmentConfig("none", **knobs)
    with Loader(paths[:8], labels[:8], batch_size=8, image_size=(200, 200), train=False,
                augment=cfg) as loader:  # fmt: skip
        x, _ = next(iter(loader))
    for i in range(8):
        one = _native.augment_image(fastmask.loader.decode(paths[i]), (200, 200), knobs=knobs)
        np.testing.assert_array_equal(x[i].permute(1, 2, 0).numpy(), one)


def test_device_normalize_matches_the_workers_float(images):
    """What a CUDA loader does on the GPU (uint8 in, one fused kernel) gives the workers'
    float32 output; here on the CPU, with the same code."""
    from fastmask.loader import REFERENCE_MEAN, REFERENCE_STD, DeviceNormalize

    paths, labels = images
    kw = dict(batch_size=8, image_size=(32, 24), train=True, seed=3)
    with Loader(paths[:8], labels[:8], **kw) as loader:
        raw, _ = next(iter(loader))
    with Loader(paths[:8], labels[:8], normalize=True, **kw) as loader:
        floats, _ = next(iter(loader))
    norm = DeviceNormalize(REFERENCE_MEAN, REFERENCE_STD)
    got = norm(raw)
    assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, floats, atol=2e-5, rtol=0)
    with pytest.raises(TypeError, match="uint8"):
        norm(floats)
