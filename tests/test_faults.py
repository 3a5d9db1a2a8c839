"""Bad data and faults in a long run: caught before training, nothing lost, nothing stalled."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY_RECIPE
from fastmask import cli
from fastmask.data import build_index
from fastmask.errors import WriteError
from fastmask.loader import Loader
from fastmask.synth import write_synthetic
from fastmask.train.runfiles import load_checkpoint, run_lock, save_checkpoint, write_json

TINY = [
    "--model", "resnet18", "--no-pretrained", "--image-size", "32", "--batch-size", "8",
    "--lr", "1e-3", "--threads", "2", "--prefetch", "2", "--torch-threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "DATA"
    write_synthetic(out, people=12, eval_people=2, seed=5, workers=2)
    return out


@pytest.fixture
def data(clean: Path, tmp_path: Path) -> Path:
    """A private copy of the clean set, free to damage."""
    copy = tmp_path / "DATA"
    shutil.copytree(clean, copy)
    return copy


def images(data: Path) -> list[Path]:
    return sorted(p for p in (data / "train" / "images").glob("*/*") if not p.name.startswith("."))


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def train(*args: str | Path) -> int:
    return cli.main(["train", *map(str, args)])


# -- 1. fastmask check ---------------------------------------------------------------------


def test_check_passes_a_clean_set_and_reports_every_problem(
    clean: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", str(clean), "--threads", "2"]) == 0
    files = images(data)
    truncated = truncate(files[0])
    empty = files[8]
    empty.write_bytes(b"")
    not_image = files[15]
    not_image.write_bytes(b"<html>not an image</html>")
    small = files[22]
    from PIL import Image

    Image.new("RGB", (100, 80)).save(small, format="JPEG" if small.suffix != ".png" else "PNG")
    # The same photo in the folders of two different people.
    copied = files[30]
    shutil.copyfile(files[1], copied)
    info = pd.read_csv(data / "eval" / "info.csv")
    missing = data / "eval" / "images" / info["ImageID"][0]
    missing.unlink()
    report_path = tmp_path / "check.json"
    assert cli.main(["check", str(data), "--threads", "2", "--json", str(report_path)]) == 1
    report = json.loads(report_path.read_text())
    got = {(Path(p["path"]), p["kind"]) for p in report["problems"]}
    assert (truncated, "truncated") in got
    assert (small, "size") in got
    assert (copied, "duplicate") in got and (files[1], "duplicate") in got
    assert (missing, "eval-missing") in got
    # Empty and foreign files are caught by the index already, by name and magic bytes.
    assert "0 bytes" in reason_of(report, empty)
    assert "not a JPEG or PNG" in reason_of(report, not_image)
    assert report["images"] > 0 and not report["ok"]
    out = capsys.readouterr().out
    assert str(truncated) in out and "problem(s)" in out


def reason_of(report: dict[str, Any], path: Path) -> str:
    return " ".join(p["reason"] for p in report["problems"] if Path(p["path"]) == path)


# -- 2. train's header check ---------------------------------------------------------------


def test_train_refuses_a_truncated_image_before_epoch_one_or_leaves_it_out(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = truncate(images(data)[3])
    args = ["mask", "--data", data, "--epochs", "1", "--max-steps", "1", *TINY]
    assert train(*args, "--out", tmp_path / "strict") == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "--lenient" in err
    assert not (tmp_path / "strict" / "last.pt").exists()

    run = tmp_path / "lenient"
    assert train(*args, "--out", run, "--lenient") == 0
    excluded = pd.read_csv(run / "excluded.csv")
    assert excluded["path"].tolist() == [str(bad)]
    summary = json.loads((run / "summary.json").read_text())
    assert [e["path"] for e in summary["excluded"]] == [str(bad)]


def test_lenient_train_also_leaves_out_what_the_index_refuses(data: Path, tmp_path: Path) -> None:
    # A zero-byte file fails the data index, before the header check: --lenient must skip it
    # too (README: "--lenient skips and warns"), and list it in excluded.csv with the rest.
    empty, bad = images(data)[5], truncate(images(data)[3])
    empty.write_bytes(b"")
    run = tmp_path / "lenient"
    args = ["mask", "--data", data, "--epochs", "1", "--max-steps", "1", *TINY]
    assert train(*args, "--out", run, "--lenient") == 0
    excluded = pd.read_csv(run / "excluded.csv")
    assert sorted(excluded["path"]) == sorted([str(empty), str(bad)])
    assert "0 bytes" in excluded.set_index("path")["reason"][str(empty)]


# -- 3. predict --on-error fallback ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("faults_run") / "mask"
    assert (
        train("mask", "--data", clean, "--out", run, "--epochs", "1", "--max-steps", "2", *TINY)
        == 0
    )
    return run


def test_predict_fallback_answers_every_row_and_lists_the_bad_ones(
    tiny_run: Path, clean: Path, data: Path, tmp_path: Path
) -> None:
    info = pd.read_csv(data / "eval" / "info.csv")
    eval_images = data / "eval" / "images"
    truncate(eval_images / info["ImageID"][1])
    (eval_images / info["ImageID"][2]).unlink()
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(tiny_run), "--data", str(data), "--out", str(out)]) == 2
    assert not out.exists(), "raise (the default) writes no file"

    args = ["predict", str(tiny_run), "--data", str(data), "--out", str(out)]
    assert cli.main([*args, "--on-error", "fallback", "--threads", "2"]) == 0
    pred = pd.read_csv(out)
    assert pred["ImageID"].tolist() == info["ImageID"].tolist()
    sidecar = pd.read_csv(tmp_path / "pred.fallback.csv")
    assert sidecar["ImageID"].tolist() == info["ImageID"][1:3].tolist()
    prior = load_checkpoint(tiny_run / "best.pt")["state"]["class_prior"]["mask"]
    probs = pred[["p0", "p1", "p2"]].to_numpy()
    assert (probs[1:3].argmax(1) == int(np.argmax(prior))).all()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4)
    shutil.rmtree(data / "eval")
    shutil.copytree(clean / "eval", data / "eval")
    assert cli.main([*args, "--on-error", "fallback", "--threads", "2"]) == 0
    assert not (tmp_path / "pred.fallback.csv").exists(), "no stale list once all images read"


# -- 4. interruption -------------------------------------------------------------------------


def test_a_signal_mid_epoch_saves_a_checkpoint_and_resume_matches_bit_for_bit(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fastmask.train.loop as loop

    args = ["gender", "--data", clean, "--epochs", "2", "--max-steps", "4", "--cutmix", "0.4",
            "--mixup", "0.4", "--ema-decay", "0.9", "--warmup-epochs", "0.5", *TINY]  # fmt: skip
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert train(*args, "--out", whole) == 0

    set_lr, calls = loop.set_lr, [0]

    def signal_at_sixth_step(optimizer: Any, lr: float) -> None:
        calls[0] += 1
        if calls[0] == 6:  # epoch 2, batch 2
            os.kill(os.getpid(), signal.SIGTERM)
        set_lr(optimizer, lr)

    monkeypatch.setattr(loop, "set_lr", signal_at_sixth_step)
    assert train(*args, "--out", stopped) == 130
    err = capsys.readouterr().err
    assert f"--resume {stopped}" in err
    position = load_checkpoint(stopped / "last.pt")["position"]
    assert (position["epoch"], position["step"]) == (1, 2)
    monkeypatch.setattr(loop, "set_lr", set_lr)
    assert train("gender", "--resume", stopped) == 0
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(stopped / "last.pt")
    assert "position" not in b
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(
        signal.getsignal(signal.SIGTERM)
    )


# One multi-task model (a recipe must cover the three tasks), two folds of two epochs.
# The job's predict step answers for an unreadable eval image instead of failing the job.
ONE_MODEL_RECIPE = TINY_RECIPE.replace(
    'tasks = ["mask", "gender", "age"]', 'tasks = ["multi"]'
).replace("[predict]\n", '[predict]\non_error = "fallback"\n')


def test_an_interrupted_run_job_resumes_mid_epoch_when_run_again(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import fastmask.train.loop as loop

    recipe = tmp_path / "one.toml"
    assert ONE_MODEL_RECIPE != TINY_RECIPE
    recipe.write_text(ONE_MODEL_RECIPE)
    out = tmp_path / "job"
    set_lr, calls = loop.set_lr, [0]

    def signal_at_third_step(optimizer: Any, lr: float) -> None:
        calls[0] += 1
        if calls[0] == 3:  # fold 0, epoch 2, batch 1
            os.kill(os.getpid(), signal.SIGINT)
        set_lr(optimizer, lr)

    monkeypatch.setattr(loop, "set_lr", signal_at_third_step)
    command = ["run", str(recipe), "--data", str(data), "--out", str(out)]
    assert cli.main(command) == 130
    fold0 = next(out.glob("**/fold0"))
    assert load_checkpoint(fold0 / "last.pt")["position"]["step"] == 1
    monkeypatch.setattr(loop, "set_lr", set_lr)
    info = pd.read_csv(data / "eval" / "info.csv")
    truncate(data / "eval" / "images" / info["ImageID"][0])
    with caplog.at_level("INFO", logger="fastmask.train.loop"):
        assert cli.main(command) == 0
    assert "in epoch 2 at batch 1" in caplog.text
    summary = json.loads((fold0 / "summary.json").read_text())
    assert summary["finished"] and summary["epochs_run"] == 2
    fallbacks = list(out.glob("**/*.fallback.csv"))
    assert len(fallbacks) == 1 and pd.read_csv(fallbacks[0])["ImageID"][0] == info["ImageID"][0]


def test_sigint_stops_the_cli_with_status_130_quickly(clean: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastmask", "train", "mask", "--data", str(clean),
           "--out", str(run), "--epochs", "3", *TINY]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / "config.json").exists():  # written just before the first batch
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - sent
    assert proc.returncode == 130, err.decode()
    assert elapsed < 30
    assert f"--resume {run}" in err.decode()
    assert (run / "last.pt").exists()


def test_loader_resumes_at_a_batch_without_decoding_the_skipped_ones(clean: Path) -> None:
    paths = [str(p) for p in images(clean)[:40]]
    with Loader(paths, list(range(40)), batch_size=8, image_size=32, threads=2, seed=3) as loader:
        loader.set_epoch(2)
        full = [(x.clone(), y.clone()) for x, y in loader]
        loader.load_state_dict({"epoch": 2, "batch": 3})
        tail = [(x.clone(), y.clone()) for x, y in loader]
        assert loader.state_dict() == {"epoch": 2, "batch": len(full)}
    assert len(tail) == len(full) - 3
    for (xa, ya), (xb, yb) in zip(full[3:], tail, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# -- 5. write failures -----------------------------------------------------------------------


def test_a_failing_write_keeps_the_previous_file_and_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = tmp_path / "last.pt"
    save_checkpoint(ckpt, {"format_version": 1, "v": 1})
    before = ckpt.read_bytes()

    def disk_full(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(WriteError, match=str(ckpt)) as info:
        save_checkpoint(ckpt, {"format_version": 1, "v": 2})
    assert "No space left" in str(info.value)
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"], "no temp file left"

    summary = tmp_path / "summary.json"
    write_json(summary, {"v": 1})

    def denied(src: Any, dst: Any) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(WriteError, match=str(summary)):
        write_json(summary, {"v": 2})
    assert json.loads(summary.read_text()) == {"v": 1}


def test_temp_files_of_killed_writers_are_cleared_by_the_next_write(tmp_path: Path) -> None:
    import subprocess
    import sys

    from fastmask.files import write_text_atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    target = tmp_path / "oof[1].csv"  # glob's special characters in the name
    stale = tmp_path / f".oof[1].csv.{dead}.tmp"  # a writer killed with -9
    live = tmp_path / f".oof[1].csv.{os.getppid()}.tmp"  # a writer still at work
    other = tmp_path / f".other.csv.{dead}.tmp"  # another file's: not ours to judge
    recent = tmp_path / f".oof[1].csv.{int(dead) + 1}.tmp"  # gone here, written a minute ago
    for p in (stale, live, other, recent):
        p.write_text("partial")
    two_hours_ago = time.time() - 7200
    for p in (stale, live, other):
        os.utime(p, (two_hours_ago, two_hours_ago))
    write_text_atomic(target, "done\n")
    assert target.read_text() == "done\n"
    assert not stale.exists() and live.exists() and other.exists() and recent.exists()


def test_a_checkpoint_write_failure_stops_training_with_the_path(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def disk_full(*a: Any, **k: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    run = tmp_path / "run"
    assert (
        train("mask", "--data", clean, "--out", run, "--epochs", "1", "--max-steps", "1", *TINY)
        == 2
    )
    err = capsys.readouterr().err
    assert f"cannot write {run / 'last.pt'}" in err or f"cannot write {run / 'best.pt'}" in err


# -- 6. one run folder, one process ------------------------------------------------------------


def test_a_second_process_is_refused_and_a_crashed_one_leaves_no_lock(
    clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    with run_lock(run):
        assert train("mask", "--data", clean, "--out", run, "--max-steps", "1", *TINY) == 2
        assert "is in use" in capsys.readouterr().err
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from pathlib import Path
            from fastmask.train.runfiles import run_lock
            with run_lock(Path({str(run)!r})):
                print("locked", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
    holder.kill()  # a crash: no clean-up code runs
    holder.wait()
    with run_lock(run):
        pass


# -- 7. paths that survive a move ------------------------------------------------------------


def test_index_cache_resolves_against_the_data_root_however_spelled(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(data.parent)
    first = build_index("DATA").frame
    assert (data / "train" / ".fastmask-index.csv").exists()
    assert (
        not pd.read_csv(data / "train" / ".fastmask-index.csv")["path"].str.startswith("DATA").any()
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    link = tmp_path / "link"
    link.symlink_to(data)
    moved = tmp_path / "moved"
    for spelling in (data, link, Path("..") / "DATA"):
        frame = build_index(spelling).frame
        assert len(frame) == len(first) and all(os.path.isfile(p) for p in frame["path"])
    data.rename(moved)
    frame = build_index(moved).frame
    assert all(os.path.isfile(p) for p in frame["path"])


def test_a_moved_run_and_data_folder_keep_working_or_say_which_path(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert (
        train("mask", "--data", data, "--out", run, "--epochs", "1", "--max-steps", "1", *TINY) == 0
    )
    new_data, new_run = tmp_path / "data2", tmp_path / "run2"
    data.rename(new_data)
    run.rename(new_run)
    assert train("mask", "--resume", new_run, "--epochs", "2") == 2
    err = capsys.readouterr().err
    assert str(data) in err and "--data" in err
    assert train("mask", "--resume", new_run, "--epochs", "2", "--data", new_data) == 0
    assert json.loads((new_run / "config.json").read_text())["data"] == str(new_data)
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(new_run), "--data", str(new_data), "--out", str(out)]) == 0


def test_face_boxes_match_by_their_place_inside_the_data_folder() -> None:
    from fastmask.crops import data_key

    old = "/old/place/DATA/train/images/000001_female_Asian_45/mask1.jpg"
    new = "relative/DATA2/train/images/000001_female_Asian_45/mask1.jpg"
    assert data_key(old) == data_key(new) == "train/images/000001_female_Asian_45/mask1.jpg"
    assert data_key("x/eval/images/ab.jpg") == "eval/images/ab.jpg"


# -- 8. a panic in a loader worker -----------------------------------------------------------


def test_a_worker_panic_names_the_image_and_never_hangs(clean: Path) -> None:
    paths = [str(p) for p in images(clean)[:16]]
    victim = next(p for p in paths if "mask3" in p)
    script = textwrap.dedent(f"""
        from fastmask.loader import Loader, DecodeError
        paths = {paths!r}
        try:
            with Loader(paths, [0] * len(paths), batch_size=4, image_size=32, threads=2) as loader:
                for _ in loader:
                    pass
        except DecodeError as err:
            print("ERROR", err)
    """)
    env = {**os.environ, "FASTMASK_FAILPOINT_PANIC": "mask3"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "ERROR" in done.stdout and "panic" in done.stdout
    assert any(p in done.stdout for p in paths if "mask3" in p), (victim, done.stdout)
