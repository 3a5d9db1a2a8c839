from __future__ import annotations

import subprocess
import sys

import pytest

import fastmask
from fastmask import _native
from fastmask.cli import COMMAND_MODULES, build_parser, main


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: fastmask" in out
    for module in COMMAND_MODULES:
        assert module.rsplit(".", 1)[1] in out


def test_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"synth", "eda", "bench"}
    for name, p in sub.choices.items():
        assert p.format_help().startswith("usage: fastmask " + name)


def test_python_dash_m_runs_and_reports_version():
    out = subprocess.run(
        [sys.executable, "-m", "fastmask", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"fastmask {fastmask.__version__}"


def test_build_info_names_the_decoders():
    info = _native.build_info()
    assert info["version"] == fastmask.__version__
    assert any(d.startswith("jpeg:") for d in info["decoders"])
    assert any(d.startswith("png:") for d in info["decoders"])
    assert info["debug"] is False  # make builds the extension in release mode
    assert info["opt_level"] == "3" and info["profile"] == "release"


def test_an_unoptimised_build_warns_once_naming_the_fix(caplog, monkeypatch):
    from fastmask import loader

    monkeypatch.setattr(loader, "_warned_unoptimized", False)
    slow = {"opt_level": "0", "profile": "debug", "debug": True}
    with caplog.at_level("WARNING", logger="fastmask.loader"):
        assert loader.warn_if_unoptimized(slow) is True
        assert loader.warn_if_unoptimized(slow) is True
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "make build" in warnings[0] and "--release" in warnings[0]
    caplog.clear()
    monkeypatch.setattr(loader, "_warned_unoptimized", False)
    # The optimised dev profile (what plain `maturin develop` builds now) does not warn.
    assert loader.warn_if_unoptimized({"opt_level": "3", "profile": "debug"}) is False
    assert loader.warn_if_unoptimized() is False
    assert not caplog.records


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "RUN", "--data", "D", "--out", "o.csv", "--batch-size", "0"],
        ["predict", "RUN", "--data", "D", "--out", "o.csv", "--threads", "-1"],
        ["classify", "a.jpg", "--model", "m.ts", "--batch-size", "0"],
        ["classify", "a.jpg", "--model", "m.ts", "--threads", "-2"],
        ["suspects", "JOB", "--top", "0"],
        ["report", "RUN", "--worst", "-1"],
        ["run", "demo", "--data", "D", "--out", "O", "--threads", "-1"],
        ["check", "D", "--threads", "-1"],
        ["faces", "D", "--workers", "-1"],
        # bench: --repeats 0 ended in StatisticsError, --images -5 left out the last 5 images.
        ["bench", "loader", "--data", "D", "--repeats", "0"],
        ["bench", "loader", "--data", "D", "--images", "-5"],
        ["bench", "loader", "--data", "D", "--threads", "-1"],
        ["bench", "loader", "--data", "D", "--batch-size", "0"],
        ["bench", "loader", "--data", "D", "--rss-epochs", "-1"],
        ["bench", "check", "--data", "D", "--epochs", "0"],
        ["bench", "check", "--data", "D", "--threads", "-1"],
    ],
)
def test_counts_out_of_range_are_usage_errors(args, capsys):
    # They reached the loader (ValueError, OverflowError tracebacks) or cut the suspects
    # silently (--top -1 kept all but the last); now argparse names the flag.
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "expected an integer >=" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["0x512", "384x-5", "384", "axb", "1x2x3"])
def test_check_size_must_be_positive_width_by_height(size, capsys):
    # 0x-5 was taken, and then every image of the set was reported as a size problem.
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "D", "--size", size])
    assert exit_info.value.code == 2
    assert "expected WIDTHxHEIGHT" in capsys.readouterr().err
