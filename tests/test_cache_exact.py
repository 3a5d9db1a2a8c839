"""The warm cache gives the pixels that decoding afresh gives (eval mode, centre crop)."""

from __future__ import annotations

import numpy as np
import pytest

from fastmask.loader import Loader


@pytest.fixture(scope="module")
def synthetic_jpegs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """128 synthetic 384x512 JPEGs (mixed subsampling and progressive) from fastmask.synth."""
    from fastmask.synth import write_synthetic

    root = tmp_path_factory.mktemp("synth")
    write_synthetic(root, people=24, eval_people=0, seed=0, workers=2)
    jpegs = sorted(p for p in root.rglob("*.jpg") if not p.name.startswith("."))
    assert len(jpegs) >= 128
    return [str(p) for p in jpegs[:128]]


def collect(loader: Loader) -> np.ndarray:
    return np.concatenate([x.numpy().copy() for x, _ in loader])


def test_warm_cache_matches_uncached_in_eval(synthetic_jpegs: list[str]):
    kw = dict(batch_size=32, image_size=224, train=False, augment="none", threads=2)
    with Loader(synthetic_jpegs, **kw) as plain:
        uncached = collect(plain)
    with Loader(synthetic_jpegs, cache=True, **kw) as cached:
        collect(cached)  # fills the cache
        warm = collect(cached)
        assert cached.cache_bytes_used > 0
    diff = np.abs(warm.astype(int) - uncached.astype(int))
    # The cache stores the crop on the pixel grid of the output: a copy, not a second resample.
    assert diff.mean() <= 0.5, diff.mean()
    assert np.percentile(diff, 99) <= 4, np.percentile(diff, 99)
