"""The trainer on a tiny synthetic set: run folder, resume after a kill, DDP, multi, folds."""

from __future__ import annotations

import csv
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from fastmask import cli
from fastmask.data import age_band
from fastmask.errors import FastmaskError, Interrupted
from fastmask.metrics import macro_f1
from fastmask.models import build_model
from fastmask.synth import write_synthetic
from fastmask.train.cli import config_for_args
from fastmask.train.config import TrainConfig, parse_age_ranges
from fastmask.train.runfiles import CHECKPOINT_VERSION, load_checkpoint
from fastmask.train.runtime import BatchMixer, Schedule
from fastmask.train.tracking import Tracker

# Small enough for 2 busy CPU cores: resnet18 from random weights on 48-pixel images, one torch
# thread (two OpenMP threads spin badly when the loader or anything else shares the cores).
TINY = [
    "--model", "resnet18", "--no-pretrained", "--image-size", "48", "--batch-size", "16",
    "--lr", "1e-3", "--threads", "2", "--prefetch", "2", "--torch-threads", "1",
]  # fmt: skip
TIMING_COLUMNS = {"seconds", "images_per_s"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "DATA"
    write_synthetic(out, people=40, eval_people=0, seed=0, workers=2)
    return out


def train_cli(*args: str | Path) -> int:
    return cli.main(["train", *map(str, args)])


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def test_run_folder_contents(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert (
        train_cli("mask", "--data", data, "--out", run, "--epochs", "2", "--max-steps", "8", *TINY)
        == 0
    )
    for name in ("config.json", "metrics.csv", "summary.json", "best.pt", "last.pt"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run.glob(".*tmp")), "temp files left behind"

    summary = json.loads((run / "summary.json").read_text())
    for key in ("best_epoch", "best_macro_f1", "per_class_f1", "wall_s", "images_per_s"):
        assert key in summary, key
    assert summary["task"] == "mask" and summary["model"] == "resnet18"
    assert summary["classes"] == ["wear", "incorrect", "not_wear"]
    assert list(summary["per_class_f1"]) == summary["classes"]
    assert summary["finished"] and summary["epochs_run"] == 2
    assert summary["images_per_s"] > 0 and summary["wall_s"] > 0
    assert len(summary["data_fingerprint"]) == 16

    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for col in ("train_loss", "val_loss", "val_macro_f1", "val_acc", "lr", "images_per_s"):
        assert all(r[col] != "" for r in rows), col
    # The best epoch is the one with the highest macro F1 (never accuracy).
    f1 = [float(r["val_macro_f1"]) for r in rows]
    assert summary["best_epoch"] == int(np.argmax(f1)) + 1
    assert summary["best_macro_f1"] == pytest.approx(max(f1), abs=1e-5)

    preds = pd.read_csv(run / "val_predictions.csv")
    assert len(preds) == summary["val_images"] == 7 * len(summary["val_people"])
    assert macro_f1(preds["true"], preds["pred"], 3) == pytest.approx(summary["best_macro_f1"])
    assert set(preds["person"]) == set(summary["val_people"])

    config = TrainConfig.from_json(json.loads((run / "config.json").read_text()))
    assert config.task == "mask" and config.image_size == (48, 48)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["format_version"] == CHECKPOINT_VERSION and ckpt["epoch"] == 2
    for key in ("model", "optimizer", "scheduler", "scaler", "sampler", "config", "label_maps"):
        assert key in ckpt, key
    assert ckpt["label_maps"] == {"mask": ["wear", "incorrect", "not_wear"]}
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == summary["best_epoch"]
    model = build_model("resnet18", "mask", pretrained=False, weights=run / "best.pt")
    assert torch.equal(model.state_dict()["fc.weight"], best["model"]["fc.weight"])


def _train_subprocess(*args: str | Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "fastmask", "train", *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_resume_after_kill_matches_uninterrupted_run(data: Path, tmp_path: Path) -> None:
    # Warm-up + cosine, oversampling, CutMix and mixup: every source of randomness is on.
    args = ["age", "--data", data, "--epochs", "2", "--warmup-epochs", "0.5", "--cutmix", "0.3",
            "--mixup", "0.3", "--max-steps", "8", *TINY]  # fmt: skip
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    proc = _train_subprocess(*args, "--out", whole)
    victim = _train_subprocess(*args, "--out", killed)
    deadline = time.monotonic() + 300
    while not (killed / "last.pt").exists():  # appears, complete, once epoch 1 is saved
        assert victim.poll() is None, victim.stderr.read().decode() if victim.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint after epoch 1"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert load_checkpoint(killed / "last.pt")["epoch"] == 1
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()

    assert train_cli("age", "--resume", killed) == 0
    assert without_timing(read_metrics(killed)) == without_timing(read_metrics(whole))
    a = load_checkpoint(whole / "last.pt")["model"]
    b = load_checkpoint(killed / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    resumed = json.loads((killed / "summary.json").read_text())
    assert resumed["finished"] and resumed["epochs_run"] == 2


def test_resume_refuses_changed_settings(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig(task="gender", data=str(data), model="resnet18")
    (run / "config.json").write_text(json.dumps(config.to_json()))
    parse = cli.build_parser().parse_args
    with pytest.raises(FastmaskError, match="--lr differ"):
        config_for_args(parse(["train", "gender", "--resume", str(run), "--lr", "0.1"]))
    resumed, folder = config_for_args(
        parse(["train", "gender", "--resume", str(run), "--epochs", "20", "--prefetch", "8"])
    )
    assert (resumed.epochs, resumed.prefetch) == (20, 8) and folder == run
    # The starting weights: a resume never reads them (last.pt holds the weights).
    resumed, _ = config_for_args(
        parse(["train", "gender", "--resume", str(run), "--weights", "elsewhere.pt"])
    )
    assert resumed.weights is not None and resumed.weights.endswith("elsewhere.pt")
    assert train_cli("age", "--resume", run) == 2  # a gender run cannot resume as age


_RECORDER = """
import hashlib, os, sys
import fastmask.loader
from fastmask import cli

class Recording(fastmask.loader.Loader):
    # Writes a digest of every training image it yields to $SEEN_DIR/seen-<rank>.txt.
    def __iter__(self):
        name = os.environ.get("RANK", "single")
        for images, labels in super().__iter__():
            if self.train:
                with open(os.path.join(os.environ["SEEN_DIR"], f"seen-{name}.txt"), "a") as f:
                    for image in images:
                        digest = hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()
                        f.write(digest + "\\n")
            yield images, labels

if __name__ == "__main__":
    fastmask.loader.Loader = Recording
    sys.exit(cli.main(sys.argv[1:]))
"""


def test_ddp_two_processes_shard_without_overlap(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fastmask.loader

    script = tmp_path / "record.py"
    script.write_text(_RECORDER)
    monkeypatch.setenv("SEEN_DIR", str(tmp_path))
    # 32 training people x 7 images: 224 samples, whole batches of 16 on one or two ranks.
    common = ["train", "gender", "--data", str(data), "--epochs", "1", "--augment", "none", *TINY]
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), *common, "--out", str(tmp_path / "ddp")]  # fmt: skip
    done = subprocess.run(ddp, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    # The same run in one process, here, through the same recording loader.
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(fastmask.loader, "Loader", runpy.run_path(str(script))["Recording"])
    assert cli.main([*common, "--out", str(tmp_path / "one")]) == 0

    seen = {
        name: (tmp_path / f"seen-{name}.txt").read_text().split() for name in ("0", "1", "single")
    }
    rank0, rank1 = set(seen["0"]), set(seen["1"])
    assert len(seen["0"]) == len(seen["1"]) > 0
    assert not rank0 & rank1, "ranks trained on the same samples"
    assert len(seen["0"]) + len(seen["1"]) == len(seen["single"])
    assert rank0 | rank1 == set(seen["single"])

    s_ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    s_one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert s_ddp["world_size"] == 2 and s_one["world_size"] == 1
    assert s_ddp["samples_per_epoch"] == s_one["samples_per_epoch"] == {"train": 224}
    assert read_metrics(tmp_path / "ddp")[0]["train_samples"] == "224"
    # Rank 0 gathered every validation image from both ranks.
    preds = pd.read_csv(tmp_path / "ddp" / "val_predictions.csv")
    assert len(preds) == s_ddp["val_images"] and preds["path"].is_unique


def test_multi_task_and_validation_age_bounds(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "multi"
    args = ["--data", data, "--out", run, "--epochs", "1", "--max-steps", "6", "--age-bounds",
            "30", "58", "--drop-ages", "57-59", "--cutmix", "0.5", *TINY]  # fmt: skip
    assert train_cli("multi", *args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["classes"]) == 18 and set(summary["per_task_f1"]) == {
        "mask",
        "gender",
        "age",
    }
    assert summary["train_age_bounds"] == [30, 58] and summary["val_age_bounds"] == [30, 60]
    row = read_metrics(run)[0]
    assert all(row[f"val_f1_{t}"] != "" for t in ("mask", "gender", "age"))
    preds = pd.read_csv(run / "val_predictions.csv")
    # The best checkpoint is chosen by the 18-class macro F1 of the combined prediction.
    assert macro_f1(preds["true"], preds["pred"], 18) == pytest.approx(summary["best_macro_f1"])
    assert (
        preds["pred"] == preds["mask_pred"] * 6 + preds["gender_pred"] * 3 + preds["age_pred"]
    ).all()
    # Validation age labels keep 30/60 although training used 30/58.
    ages = preds["person"].str.rsplit("_", n=1).str[1].astype(int).to_numpy()
    assert (preds["age_true"].to_numpy() == age_band(ages, (30, 60))).all()
    assert summary["train_images"] == 7 * summary["train_people"]


def test_extra_epochs_train_on_train_and_validation(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "extra"
    args = [
        "--data",
        data,
        "--out",
        run,
        "--epochs",
        "1",
        "--extra-epochs",
        "1",
        "--max-steps",
        "2",
    ]
    assert train_cli("mask", *args, *TINY) == 0
    rows = read_metrics(run)
    assert [(r["epoch"], r["phase"]) for r in rows] == [("1", "train"), ("2", "train+val")]
    assert rows[1]["val_macro_f1"] == ""  # validation people are training data by then
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_checkpoint"] == "last.pt" and summary["best_epoch"] == 1
    assert summary["samples_per_epoch"]["train+val"] == 272  # 40 people x 7, whole batches of 16
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == 1
    # best.pt holds what predict and export read, not the optimiser a resume needs.
    assert "optimizer" in load_checkpoint(run / "last.pt") and "optimizer" not in best
    assert {"model", "config", "label_maps", "state", "eval_weights"} <= set(best)
    assert (run / "best.pt").stat().st_size < 0.5 * (run / "last.pt").stat().st_size


def test_folds_write_one_run_per_fold(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "folds"
    args = ["--data", data, "--out", run, "--folds", "2", "--epochs", "1", "--max-steps", "2"]
    assert train_cli("gender", *args, *TINY) == 0
    top = json.loads((run / "summary.json").read_text())
    assert top["folds"] == 2 and len(top["fold_best_macro_f1"]) == 2
    assert top["mean_macro_f1"] == pytest.approx(np.mean(top["fold_best_macro_f1"]))
    val = [
        set(json.loads((run / f"fold{i}" / "summary.json").read_text())["val_people"])
        for i in (0, 1)
    ]
    assert not val[0] & val[1] and len(val[0] | val[1]) == 40


def test_offline_pretrained_weights_error_is_clear(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torchvision.models._api as api

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(FastmaskError, match="--no-pretrained") as err:
        build_model("resnet18", "mask")
    assert "--weights PATH" in str(err.value)
    # `fastmask run` (the README's first command) has no such flags: name its --set keys too.
    assert "--set pretrained=false" in str(err.value)
    assert "--set weights=PATH" in str(err.value)
    code = train_cli("mask", "--data", data, "--out", tmp_path / "r", "--model", "resnet18")
    assert code == 2
    assert "--no-pretrained" in capsys.readouterr().err


def test_local_weights_load_backbone_and_skip_other_heads(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18()  # stands in for a downloaded ImageNet file
    torch.save(imagenet.state_dict(), tmp_path / "r18.pth")
    for task in ("age", "multi"):
        model = build_model("resnet18", task, pretrained=False, weights=tmp_path / "r18.pth")
        conv = model.state_dict()["backbone.conv1.weight" if task == "multi" else "conv1.weight"]
        assert torch.equal(conv, imagenet.conv1.weight)
    with pytest.raises(FastmaskError, match="same --model"):
        build_model("resnet34", "age", pretrained=False, weights=tmp_path / "r18.pth")


def test_cutmix_swaps_a_half_and_mixes_labels_by_area() -> None:
    config = TrainConfig(task="mask", data="-", cutmix=1.0)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 6, 8).contiguous()
    y = torch.tensor([0, 1, 2, 0])
    mixed, targets = BatchMixer(config, epoch=0)(x, {"mask": y})
    for i in range(4):
        left, right = mixed[i, :, :, :4], mixed[i, :, :, 4:]
        kept, pasted = (left, right) if bool((left == i).all()) else (right, left)
        assert (kept == i).all() and pasted.unique().numel() == 1
        j = int(pasted.flatten()[0])
        want = 0.5 * torch.eye(3)[y[i]] + 0.5 * torch.eye(3)[y[j]]
        assert torch.allclose(targets["mask"][i], want)
    # Same (seed, epoch), same mix: the reason resume can be exact.
    again, _ = BatchMixer(config, epoch=0)(x, {"mask": y})
    assert torch.equal(again, mixed)


def test_schedule_warmup_cosine_and_step() -> None:
    cos = Schedule("cosine", total_epochs=10, warmup_epochs=2, step_size=0, step_gamma=0.1)
    assert cos.factor(1.0) == pytest.approx(0.5)
    assert cos.factor(2.0) == pytest.approx(1.0)
    assert cos.factor(6.0) == pytest.approx(0.5)
    assert cos.factor(10.0) == pytest.approx(0.0)
    step = Schedule("step", total_epochs=9, warmup_epochs=0, step_size=0, step_gamma=0.1)
    assert [step.factor(e) for e in (0, 2.9, 3, 6.5)] == pytest.approx([1, 1, 0.1, 0.01])


def test_parse_age_ranges_and_config_round_trip() -> None:
    assert parse_age_ranges("27-29,57-59") == ((27, 29), (57, 59))
    assert parse_age_ranges("29") == ((29, 29),)
    with pytest.raises(FastmaskError):
        parse_age_ranges("30-20")
    config = TrainConfig(task="age", data="D", drop_ages=((27, 29),), image_size=(128, 96))
    assert TrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_missing_wandb_warns_and_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    tracker = Tracker(TrainConfig(task="mask", data="-", wandb="offline"), tmp_path, True)
    assert tracker.run is None
    assert "wandb is not installed" in caplog.text
    tracker.log({"epoch": 1, "train_loss": 0.5})
    tracker.finish({})


def test_ema_weights_are_scored_saved_and_predicted(data: Path, tmp_path: Path) -> None:
    from fastmask.predict import load_model

    run = tmp_path / "ema"
    argv = ["mask", "--data", data, "--out", run, "--epochs", "2", "--max-steps", "3"]
    assert train_cli(*argv, "--ema-decay", "0.5", *TINY) == 0
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["eval_weights"] == "ema" and set(ckpt["ema"]) == set(ckpt["model"])
    differs = [k for k, v in ckpt["model"].items() if not torch.equal(v, ckpt["ema"][k])]
    assert differs, "the EMA weights should not equal the raw weights after training"
    rows = read_metrics(run)
    assert all(r["val_macro_f1_raw"] != "" for r in rows)
    loaded = load_model(run / "best.pt", torch.device("cpu"))
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, ckpt["ema"][name]), name


def test_accumulation_steps_the_optimiser_once_per_n_batches(data: Path, tmp_path: Path) -> None:
    def optimiser_steps(accum: str) -> int:
        run = tmp_path / f"accum{accum}"
        argv = ["gender", "--data", data, "--out", run, "--epochs", "1", "--max-steps", "5"]
        assert train_cli(*argv, "--accum-steps", accum, *TINY) == 0
        state = load_checkpoint(run / "last.pt")["optimizer"]["state"]
        return int(next(iter(state.values()))["step"])

    assert optimiser_steps("1") == 5
    assert optimiser_steps("2") == 3  # 2 + 2 + the last, partial window


def test_torchrun_with_one_process_trains_through_the_process_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`torchrun --nproc_per_node 1` (one GPU) starts the process group and DDP like a
    multi-GPU run, so benches/gpu_check.sh exercises NCCL in the trainer on one GPU."""
    import socket

    import torch.distributed as dist

    from fastmask.train.distributed import setup_context

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    ctx = setup_context("cpu")
    assert not ctx.distributed and not dist.is_initialized()  # plain python: no group
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "gpu-check")
    ctx = setup_context("cpu")
    try:
        assert ctx.distributed and dist.is_initialized() and dist.get_world_size() == 1
        assert dist.get_backend() == "gloo"
    finally:
        dist.destroy_process_group()


def test_device_cuda_gives_each_torchrun_rank_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--device cuda` under torchrun put every rank on GPU 0 (NCCL refuses duplicate GPUs);
    like `auto`, it now means cuda:LOCAL_RANK. CUDA is faked: this runs on the CPU."""
    from fastmask.train.distributed import setup_context

    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    for flag in ("cuda", "auto"):
        assert setup_context(flag).device == torch.device("cuda", 3)
    assert setup_context("cuda:1").device == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 3)] * 2 + [torch.device("cuda", 1)]


def test_out_of_an_existing_run_refuses_other_settings(data: Path, tmp_path: Path) -> None:
    # train continues a run folder that holds last.pt; with other settings it used to mix
    # them into the old weights and overwrite config.json (or crash on a state-dict mismatch).
    run = tmp_path / "run"
    parse = cli.build_parser().parse_args
    same = ["--data", str(data), "--out", str(run), "--model", "resnet18", "--lr", "1e-3"]
    config, folder = config_for_args(parse(["train", "gender", *same]))
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_json()))
    (run / "last.pt").write_bytes(b"")
    assert config_for_args(parse(["train", "gender", *same])) == (config, folder)
    assert config_for_args(parse(["train", "gender", *same, "--epochs", "3"]))[0].epochs == 3
    with pytest.raises(FastmaskError, match=r"--lr differ .*--resume .*another --out"):
        config_for_args(parse(["train", "gender", *same, "--lr", "0.1"]))
    with pytest.raises(FastmaskError, match="holds a gender run, not age"):
        config_for_args(parse(["train", "age", *same]))


def test_data_comes_from_a_config_file_or_set(tmp_path: Path) -> None:
    # `data` is a setting like any other: a config file or --set could not give it ("expected
    # a value of a known type"), though --data is then not needed.
    parse = cli.build_parser().parse_args
    (tmp_path / "c.toml").write_text(f'data = "{tmp_path / "D"}"\nepochs = 2\n')
    config, _ = config_for_args(
        parse(["train", "mask", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path)])
    )
    assert (config.data, config.epochs) == (str(tmp_path / "D"), 2)
    config, _ = config_for_args(parse(["train", "mask", "--set", "data=D", "--out", "x"]))
    assert config.data == os.path.abspath("D")
    with pytest.raises(FastmaskError, match=r"--set: data = 3: expected a string"):
        config_for_args(parse(["train", "mask", "--set", "data=3"]))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--image-size", "9000"], "--image-size must be <= 8192"),
        (["--prefetch", "0"], "--prefetch must be >= 1"),
        (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
        (["--momentum", "-1"], "--momentum must be >= 0"),
        (["--task-weights", "-1", "1", "1"], "--task-weights must be >= 0"),
        (["--corrections", "fix.csv", "--no-corrections"], "--corrections .* --no-corrections"),
    ],
)
def test_bad_values_and_conflicting_flags_are_refused_before_any_work(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # These reached torch or the loader as a traceback (or, for --corrections with
    # --no-corrections, silently dropped the file the user named).
    assert train_cli("multi", "--data", "/nonexistent", *flags) == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_weights_file_that_is_not_a_checkpoint_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_text("garbage\n")
    with pytest.raises(FastmaskError, match=r"cannot read weights file .*w\.pt"):
        build_model("resnet18", "mask", pretrained=False, weights=tmp_path / "w.pt")


def test_resume_with_another_out_and_all_zero_class_weights_are_refused(
    data: Path, tmp_path: Path
) -> None:
    # --resume RUN --out OTHER trained on in RUN and ignored OTHER without a word; class
    # weights that are all 0 made every loss 0, so nothing was learned.
    parse = cli.build_parser().parse_args
    run = tmp_path / "run"
    config, _ = config_for_args(parse(["train", "mask", "--data", str(data), "--out", str(run)]))
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_json()))
    assert config_for_args(parse(["train", "mask", "--resume", str(run), "--out", str(run)]))
    with pytest.raises(
        FastmaskError,
        match=r"--resume .*run --out .*other: a resumed run continues in .*run; drop --out",
    ):
        config_for_args(
            parse(["train", "mask", "--resume", str(run), "--out", str(tmp_path) + "/other"])
        )
    with pytest.raises(FastmaskError, match="--class-weights 0,0,0: at least one must be > 0"):
        config_for_args(parse(["train", "mask", "--data", str(data), "--class-weights", "0,0,0"]))


def test_an_interrupted_folds_run_resumes_and_keeps_its_settings(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # With --folds the run's own config.json came only once every fold was done: the printed
    # `--resume RUN` said "no config.json there", and the same --out with another --lr went on
    # from fold0/last.pt with the new lr.
    import fastmask.train.loop as loop

    def interrupted(c: TrainConfig, ctx: Any, split: Any, run_dir: Path, *rest: Any) -> Any:
        run_dir.mkdir(parents=True)
        (run_dir / "last.pt").write_bytes(b"")  # stands in for the checkpoint of a stop
        raise Interrupted(str(run_dir), "SIGINT")

    monkeypatch.setattr(loop, "train_split", interrupted)
    run = tmp_path / "run"
    common = ["--data", data, "--out", run, "--folds", "2", "--limit", "10", *TINY]
    assert train_cli("gender", *common) == 130
    assert f"--resume {run}" in capsys.readouterr().err
    parse = cli.build_parser().parse_args
    config, folder = config_for_args(parse(["train", "gender", "--resume", str(run)]))
    assert (config.folds, folder) == (2, run)
    with pytest.raises(FastmaskError, match=r"--lr differ .*--resume"):
        config_for_args(parse(["train", "gender", *map(str, common), "--lr", "0.5"]))


def test_weights_path_is_kept_absolute_so_resume_works_from_anywhere(tmp_path: Path) -> None:
    # --weights stayed as typed: a resume from another folder rebuilt the model from a relative
    # path that no longer pointed at the file ("cannot read weights file").
    parse = cli.build_parser().parse_args
    args = ["train", "mask", "--data", "D", "--out", str(tmp_path), "--weights", "w.pt"]
    assert config_for_args(parse(args))[0].weights == os.path.abspath("w.pt")
    toml = tmp_path / "c.toml"
    toml.write_text('weights = "w.pt"\n')
    args = ["train", "mask", "--data", "D", "--out", str(tmp_path), "--config", str(toml)]
    assert config_for_args(parse(args))[0].weights == os.path.abspath("w.pt")


def test_a_corrections_path_is_kept_absolute_so_resume_and_suspects_work_from_anywhere(
    tmp_path: Path,
) -> None:
    # --corrections stayed as typed, unlike --data, --faces and --weights: a resume, predict
    # or suspects from another folder could not find the file.
    parse = cli.build_parser().parse_args
    base = ["train", "mask", "--data", "D", "--out", str(tmp_path)]
    config = config_for_args(parse([*base, "--corrections", "fix.csv"]))[0]
    assert config.corrections == os.path.abspath("fix.csv")
    assert config_for_args(parse(base))[0].corrections == "default"
    assert config_for_args(parse([*base, "--no-corrections"]))[0].corrections == "none"


def test_a_resume_needs_no_starting_weights(data: Path, tmp_path: Path) -> None:
    # last.pt holds the weights: a resume on a machine without the --weights file (or, the
    # same path, offline without cached ImageNet weights) must not fetch them first.
    from fastmask.models import build_model

    weights = tmp_path / "start.pt"
    torch.save(build_model("resnet18", "gender", pretrained=False).state_dict(), weights)
    run = tmp_path / "run"
    tiny = [*TINY, "--max-steps", "2", "--weights", weights]
    assert train_cli("gender", "--data", data, "--out", run, "--epochs", "1", *tiny) == 0
    weights.unlink()
    assert train_cli("gender", "--resume", run, "--epochs", "2") == 0
    assert [r["epoch"] for r in read_metrics(run)] == ["1", "2"]


def test_a_corrections_file_naming_nobody_in_the_data_is_warned_about(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A typo in a user's corrections id corrected nobody without a word. The index says so,
    # so train, run, eda and suspects all warn.
    from fastmask.data import build_index
    from fastmask.train.splits import load_data

    folders = sorted(p.name for p in (data / "train" / "images").iterdir() if p.is_dir())
    first = folders[0].split("_")[0]
    fix = tmp_path / "fix.csv"
    fix.write_text(f"id,field,value\n{first},gender,flip\n99999x,gender,male\n")
    with caplog.at_level("WARNING"):
        load_data(TrainConfig(task="gender", data=str(data), corrections=str(fix)))
    assert re.search(r"fix\.csv: 1 id\(s\) match nobody in .*: 99999x", caplog.text)
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_data(TrainConfig(task="gender", data=str(data)))  # the shipped list: real-data ids
    assert "match nobody" not in caplog.text
    index = build_index(data, corrections=fix, warn=False)
    assert index.unmatched_corrections == ["99999x"] and index.corrections_applied == 1
