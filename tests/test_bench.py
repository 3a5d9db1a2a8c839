"""`fastmask bench loader` end to end on a tiny synthetic set: every figure is measured and
reported, the ratios are computed from the measured rates, and --json is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastmask import cli
from fastmask.bench import bench_loader, format_results
from fastmask.errors import FastmaskError
from fastmask.synth import write_synthetic


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("bench") / "DATA"
    write_synthetic(data, people=12, eval_people=1, seed=5, workers=2)
    return data


def test_bench_loader_measures_every_pipeline_and_derives_the_ratios(bench_data: Path):
    r = bench_loader(bench_data, threads=1, images=40, batch_size=16, repeats=1, rss_epochs=2)
    assert r["images"] == 40 and r["threads"] == 1
    rates = "fastmask_uncached fastmask_cached torchvision_pil decode_pil decode_fastmask"
    for key in rates.split() + ["decode_pil_draft_quarter", "decode_fastmask_scaled_quarter"]:
        assert r[key] > 0, key
    assert r["ratio_cached_vs_torchvision"] == pytest.approx(
        r["fastmask_cached"] / r["torchvision_pil"]
    )
    assert r["pipeline_vs_decode_scaling"] == pytest.approx(
        r["fastmask_uncached"] / r["decode_fastmask"]
    )
    assert r["decode_ceiling_vs_torchvision"] == pytest.approx(
        r["decode_fastmask"] / r["torchvision_pil"]
    )
    assert r["decode_fastmask_parallel"] > 0
    assert r["pipeline_vs_parallel_decode"] == pytest.approx(
        r["fastmask_uncached"] / r["decode_fastmask_parallel"]
    )
    assert r["cache_pixel_bytes"] > 0 and "rss_growth" in r
    # The cache's RSS leaves out the ring buffers (4 times the cache's pixels here): RSS moves
    # by a few MB on its own, so only a loose bound.
    assert r["cache_rss_ratio"] < 2.5
    assert len(r["targets"]) == 6 and all(isinstance(v, bool) for v in r["targets"].values())
    text = format_results(r)
    assert "(b) fastmask warm cache" in text and "decode ceiling" in text
    assert "threads at once" in text


def test_bench_cli_writes_json(bench_data: Path, tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    flags = ["--threads", "1", "--images", "32", "--batch-size", "16"]
    flags += ["--repeats", "1", "--rss-epochs", "0"]
    argv = ["bench", "loader", "--data", str(bench_data), *flags, "--json", str(out)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "ratio (a)/(c)" in text
    saved = json.loads(out.read_text())
    assert saved["images"] == 32 and "rss_growth" not in saved
    # Not measured (--rss-epochs 0): the RSS growth target was printed as "met".
    assert not any("RSS growth" in name for name in saved["targets"])
    assert "target RSS growth" not in text and "RSS growth: not measured" in text


def test_bench_needs_a_batch_of_jpegs(bench_data: Path):
    with pytest.raises(FastmaskError, match="need at least 500 JPEG"):
        bench_loader(bench_data, threads=1, batch_size=500, repeats=1)


def test_bench_check_compares_the_header_check_with_an_epoch(
    bench_data: Path, tmp_path: Path, capsys
):
    out = tmp_path / "check.json"
    argv = ["bench", "check", "--data", str(bench_data), "--repeats", "1", "--epochs", "1"]
    assert cli.main([*argv, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["images"] == 84 and r["header_check_s"] > 0 and r["epoch_loading_s"] > 0
    assert r["header_check_vs_epoch"] == pytest.approx(r["header_check_s"] / r["epoch_loading_s"])
    assert "ratio header check / epoch" in capsys.readouterr().out


def test_bench_takes_the_lenient_flag_its_data_errors_name(
    bench_data: Path, tmp_path: Path, capsys
):
    """A layout problem ends in "pass --lenient": both benches must accept it."""
    import shutil

    data = tmp_path / "DATA"
    shutil.copytree(bench_data, data)
    person = sorted(p for p in (data / "train" / "images").iterdir() if p.name[0] != ".")[0]
    (person / "hat.jpg").write_bytes((person / "normal.jpg").read_bytes())
    argv = ["bench", "check", "--data", str(data), "--repeats", "1", "--epochs", "1"]
    assert cli.main(argv) == 2
    assert "--lenient" in capsys.readouterr().err
    assert cli.main([*argv, "--lenient"]) == 0
    assert "84 images" in capsys.readouterr().out
    flags = ["--threads", "1", "--images", "16", "--batch-size", "16", "--repeats", "1"]
    argv = ["bench", "loader", "--data", str(data), *flags, "--rss-epochs", "0", "--lenient"]
    assert cli.main(argv) == 0
