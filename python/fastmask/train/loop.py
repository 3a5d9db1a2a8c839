"""The training loop: one epoch (`train_one_epoch`), one split (`train_split`), all folds
(`train`). Validation, files and tracking live in their own modules beside this one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastmask.crops import FACE_CROPS, face_detector
from fastmask.errors import FastmaskError, Interrupted
from fastmask.schema import NUM_CLASSES, TASKS, outputs_by_head, split_targets, task_labels
from fastmask.train.config import TrainConfig
from fastmask.train.distributed import Context, setup_context
from fastmask.train.interrupt import StopRequest, stop_on_signals
from fastmask.train.runfiles import (
    best_record,
    checkpoint_payload,
    load_checkpoint,
    make_summary,
    plot_run_confusion,
    run_lock,
    save_checkpoint,
    weights_payload,
    write_excluded,
    write_json,
    write_metrics,
    write_predictions,
)
from fastmask.train.runtime import (
    BatchMixer,
    Runtime,
    build_runtime,
    determinism,
    epoch_seed,
    set_lr,
)
from fastmask.train.splits import (
    Split,
    data_fingerprint,
    load_data,
    make_loader,
    make_splits,
    screen_images,
    training_rows,
)
from fastmask.train.tracking import Tracker
from fastmask.train.validation import evaluate, make_val_loader

if TYPE_CHECKING:
    from fastmask.loader import Loader

log = logging.getLogger(__name__)


def train_one_epoch(
    rt: Runtime,
    loader: Loader,
    epoch: int,
    steps: int,
    stop: StopRequest | None = None,
    position: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One pass over the loader (at most `steps` batches); returns loss, images, seconds.

    `position` (from a mid-epoch checkpoint) starts at its step with its RNG states. When
    `stop` is set the epoch ends at the next optimiser step and the result's "position"
    holds what a resume needs; it is None when the epoch ran to its end.
    """
    import torch
    from tqdm.auto import tqdm

    c, ctx = rt.config, rt.ctx
    rt.model.train()
    mixer = BatchMixer(c, epoch)
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    seen = 0
    first_step = 0
    elapsed_before = 0.0
    if position is not None:
        first_step, seen = int(position["step"]), int(position["seen"])
        loss_sum += float(position["loss_sum"])
        elapsed_before = float(position["seconds"])
        restore_rng(position, mixer)
        loader.load_state_dict({"epoch": epoch, "batch": first_step})
    stopped: dict[str, Any] | None = None
    start = time.perf_counter()
    bar = tqdm(
        total=steps,
        initial=first_step,
        desc=f"epoch {epoch + 1}/{c.total_epochs}",
        leave=False,
        disable=None if ctx.is_main else True,
        dynamic_ncols=True,
    )
    with bar:
        # zip stops on range first, so no batch beyond `steps` is pulled from the loader.
        for step, (images, labels) in zip(range(first_step, steps), loader, strict=False):
            lr = c.lr * rt.schedule.factor(epoch + step / steps)
            set_lr(rt.optimizer, lr)
            x = rt.prepare(images)
            targets = split_targets(labels.to(ctx.device, non_blocking=True), c.task)
            x, targets = mixer(x, targets)
            # One optimiser step per `accum_steps` batches; DDP syncs gradients only then.
            first = step % c.accum_steps == 0
            last = (step + 1) % c.accum_steps == 0 or step == steps - 1
            if first:
                rt.optimizer.zero_grad(set_to_none=True)
            no_sync = getattr(rt.model, "no_sync", None)  # DDP only
            sync = no_sync() if no_sync is not None and not last else nullcontext()
            with sync:
                with rt.autocast():
                    outputs = outputs_by_head(rt.model(x), c.task)
                loss = rt.criterion(outputs, targets)
                rt.scaler.scale(loss / c.accum_steps).backward()
            if last:
                rt.scaler.step(rt.optimizer)
                rt.scaler.update()
                if rt.ema is not None:
                    rt.ema.update(rt.raw_model)
            n = int(labels.shape[0])
            loss_sum += loss.detach().double() * n
            seen += n
            bar.update(1)
            if ctx.is_main and (step % 10 == 0 or step == steps - 1):
                rate = seen * ctx.world_size / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
            # A stop lands after an optimiser step: no half-accumulated gradient to save.
            if last and step + 1 < steps and stop is not None and stop.agreed(ctx):
                stopped = {
                    "epoch": epoch,
                    "step": step + 1,
                    "seen": seen,
                    "loss_sum": float(loss_sum),
                    "seconds": elapsed_before + time.perf_counter() - start,
                    **rng_state(mixer),
                }
                break
    seconds = elapsed_before + time.perf_counter() - start
    if stopped is not None:
        return {"position": stopped}
    totals = torch.tensor([float(loss_sum), float(seen)], dtype=torch.float64)
    if ctx.distributed:
        import torch.distributed as dist

        totals = totals.to(ctx.device)
        dist.all_reduce(totals)
    loss_total, images_total = (float(v) for v in totals.cpu())
    return {
        "train_loss": loss_total / max(images_total, 1.0),
        "train_samples": images_total,
        "train_seconds": seconds,
        "lr": c.lr * rt.schedule.factor(epoch + 1),
        "position": None,
    }


def rng_state(mixer: BatchMixer) -> dict[str, Any]:
    """Every RNG a step draws from after the loader's: torch's (dropout) and the mixer's."""
    import torch

    state: dict[str, Any] = {
        "torch_rng": torch.get_rng_state(),
        "mixer_rng": mixer.rng.bit_generator.state,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(position: dict[str, Any], mixer: BatchMixer) -> None:
    import torch

    torch.set_rng_state(position["torch_rng"])
    mixer.rng.bit_generator.state = position["mixer_rng"]
    if "cuda_rng" in position and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(position["cuda_rng"])


def train_split(
    c: TrainConfig,
    ctx: Context,
    split: Split,
    run_dir: Path,
    fingerprint: str,
    stop: StopRequest | None = None,
    excluded: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """Train on one split, writing the run folder; resumes from run_dir/last.pt if present,
    mid-epoch when an interruption saved it there. Raises Interrupted once `stop` is set."""
    import torch

    started = time.perf_counter()
    train_labels = task_labels(split.train, c.task)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    rt = build_runtime(c, ctx, train_labels, resuming=last_path.exists())
    state: dict[str, Any] = {
        "next_epoch": 0,
        "history": [],
        "best_epoch": 0,
        "best_macro_f1": -1.0,
        "best": {},
        "bad_epochs": 0,
        "stopped_early": False,
        "wall_s": 0.0,
        "samples_per_epoch": {},
    }
    position: dict[str, Any] | None = None
    if last_path.exists():
        ckpt = load_checkpoint(last_path)
        rt.raw_model.load_state_dict(ckpt["model"])
        rt.optimizer.load_state_dict(ckpt["optimizer"])
        rt.scaler.load_state_dict(ckpt["scaler"])
        if rt.ema is not None:
            rt.ema.model.load_state_dict(ckpt["ema"])
        state.update(ckpt["state"])
        position = ckpt.get("position")
        if position is None:
            log.info("resuming %s after epoch %d", run_dir, state["next_epoch"])
        else:
            log.info(
                "resuming %s in epoch %d at batch %d",
                run_dir,
                position["epoch"] + 1,
                position["step"],
            )
    state["excluded"] = list(excluded)
    # The training class frequencies per head: predict's answer for an unreadable image.
    targets = split_targets(torch.tensor(np.asarray(train_labels)), c.task)
    state["class_prior"] = {
        h: (torch.bincount(t, minlength=NUM_CLASSES[h]).double() / max(len(t), 1)).tolist()
        for h, t in targets.items()
    }
    if c.crop in FACE_CROPS and "face_detector" not in state:
        # The detector whose boxes the run trains on, kept in its checkpoints: export and
        # classify run that one even if faces.csv is made again with another.
        state["face_detector"] = face_detector(c.to_json())
    check_same_data(run_dir, fingerprint, resuming=last_path.exists())
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", c.to_json())
    tracker = Tracker(c, run_dir, enabled=ctx.is_main)
    loaders: dict[str, Loader] = {}
    val_loader = make_val_loader(c, split.val, ctx) if c.epochs > state["next_epoch"] else None
    try:
        for epoch in range(state["next_epoch"], c.total_epochs):
            if stop:
                raise Interrupted(str(run_dir), stop.signal_name or "stop")
            extra = epoch >= c.epochs
            if not extra and state["stopped_early"]:
                continue
            phase = "train+val" if extra else "train"
            if phase not in loaders:
                rows = split.train
                if extra:
                    import pandas as pd

                    rows = training_rows(pd.concat([split.train, split.val]), c)
                loaders[phase] = make_loader(c, rows, task_labels(rows, c.task), ctx, train=True)
                # Samples of one epoch over all ranks, after oversampling and sharding.
                spe = loaders[phase].samples_per_epoch * ctx.world_size
                state["samples_per_epoch"][phase] = spe
            loader = loaders[phase]
            torch.manual_seed(epoch_seed(c.seed, epoch))
            loader.set_epoch(epoch)
            steps = min(len(loader), c.max_steps) if c.max_steps else len(loader)
            if steps == 0:
                raise FastmaskError(
                    f"no training batch: {loader.samples_per_epoch} samples per rank with "
                    f"--batch-size {c.batch_size}; lower the batch size"
                )
            epoch_start = time.perf_counter()
            resume_at = position if position is not None and position["epoch"] == epoch else None
            position = None
            stats = train_one_epoch(rt, loader, epoch, steps, stop, resume_at)
            if stats["position"] is not None:
                state["wall_s"] += time.perf_counter() - started
                if ctx.is_main:
                    payload = checkpoint_payload(rt, state, epoch)
                    payload["position"] = stats["position"]
                    save_checkpoint(last_path, payload)
                    log.info(
                        "saved %s at batch %d of epoch %d",
                        last_path,
                        stats["position"]["step"],
                        epoch + 1,
                    )
                raise Interrupted(str(run_dir), (stop and stop.signal_name) or "stop")
            del stats["position"]
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "phase": phase,
                **stats,
                "images_per_s": stats["train_samples"] / max(stats["train_seconds"], 1e-9),
            }
            improved = False
            result = None
            if not extra:
                # With EMA, the averaged weights are what is scored, selected and predicted.
                ema_model = rt.ema.model if rt.ema is not None else None
                result = evaluate(rt, split.val, val_loader, ema_model)
                if ema_model is not None:
                    row["val_macro_f1_raw"] = evaluate(rt, split.val, val_loader).macro_f1
                row.update(
                    val_loss=result.loss, val_macro_f1=result.macro_f1, val_acc=result.accuracy
                )
                row.update({f"val_f1_{t}": f for t, f in result.task_f1.items()})
                improved = result.macro_f1 > state["best_macro_f1"]
                if improved:
                    state["best_epoch"], state["best_macro_f1"] = epoch + 1, result.macro_f1
                    state["best"] = best_record(result, c.task)
                    state["bad_epochs"] = 0
                else:
                    state["bad_epochs"] += 1
                if c.patience and state["bad_epochs"] >= c.patience:
                    state["stopped_early"] = True
                    log.info("early stop: no better macro F1 for %d epochs", c.patience)
            row["seconds"] = time.perf_counter() - epoch_start
            state["history"].append(row)
            state["next_epoch"] = epoch + 1
            state["wall_s"] += time.perf_counter() - started
            started = time.perf_counter()
            if ctx.is_main:
                log_epoch(row, state, c)
                payload = checkpoint_payload(rt, state, epoch + 1)
                if improved and result is not None:
                    write_predictions(run_dir / "val_predictions.csv", split.val, result, c.task)
                    plot_run_confusion(run_dir, result, c.task, epoch + 1)
                if improved:
                    # best.pt first: a kill between the two writes redoes this epoch from the
                    # previous last.pt, and seeded epochs give the same weights again.
                    save_checkpoint(best_path, weights_payload(payload))
                save_checkpoint(last_path, payload)
                write_metrics(run_dir / "metrics.csv", state["history"], c.task)
                summary = make_summary(c, ctx, split, state, fingerprint)
                write_json(run_dir / "summary.json", summary)
                tracker.log(row, run_dir / "confusion.png" if improved else None)
            if stop and epoch + 1 < c.total_epochs:
                raise Interrupted(str(run_dir), stop.signal_name or "stop")
    finally:
        for open_loader in [*loaders.values(), val_loader]:
            if open_loader is not None:
                open_loader.close()
    summary = make_summary(c, ctx, split, state, fingerprint, finished=True)
    if ctx.is_main:
        # Also repairs metrics.csv when a kill fell between the last checkpoint and its write.
        write_metrics(run_dir / "metrics.csv", state["history"], c.task)
        write_json(run_dir / "summary.json", summary)
        tracker.finish(summary)
    return summary


def check_same_data(run_dir: Path, fingerprint: str, resuming: bool) -> None:
    """A resumed run must see the data it started on, wherever that data now lives."""
    summary = run_dir / "summary.json"
    if not resuming or not summary.exists():
        return
    before = json.loads(summary.read_text()).get("data_fingerprint")
    if before is not None and before != fingerprint:
        raise FastmaskError(
            f"{run_dir} was trained on other data (fingerprint {before}, now {fingerprint}): "
            "pass the data folder it started on with --data, or train into a new --out"
        )


def log_epoch(row: dict[str, Any], state: dict[str, Any], c: TrainConfig) -> None:
    val = ""
    if row.get("val_macro_f1") is not None:
        val = (
            f" val_loss {row['val_loss']:.4f} val_f1 {row['val_macro_f1']:.4f} "
            f"(best {state['best_macro_f1']:.4f} @{state['best_epoch']}) "
            f"acc {row['val_acc']:.4f}"
        )
        if c.task == "multi":
            val += " " + " ".join(f"{t} {row[f'val_f1_{t}']:.3f}" for t in TASKS)
    log.info(
        "epoch %d/%d %s train_loss %.4f%s lr %.2e %.0f img/s %.1f s",
        row["epoch"],
        c.total_epochs,
        row["phase"],
        row["train_loss"],
        val,
        row["lr"],
        row["images_per_s"],
        row["seconds"],
    )


def train(c: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Train `c` into run_dir (one split, or fold0..fold{K-1}); resumes what is there.

    The run folder is locked for the run; every image gets a header check first; SIGINT or
    SIGTERM saves a resumable checkpoint at the next batch boundary and raises Interrupted.
    """
    ctx = setup_context(c.device)
    deterministic = c.deterministic if c.deterministic is not None else ctx.device.type == "cpu"
    try:
        with (
            run_lock(run_dir) if ctx.is_main else nullcontext(),
            stop_on_signals() as stop,
            determinism(deterministic, c.torch_threads),
        ):
            frame, skipped = load_data(c)
            frame, unreadable = screen_images(frame, c)
            excluded = skipped + unreadable
            if ctx.is_main and excluded:
                write_excluded(run_dir / "excluded.csv", excluded)
            fingerprint = data_fingerprint(frame)
            splits = make_splits(frame, c)
            if len(splits) == 1:
                return train_split(c, ctx, splits[0], run_dir, fingerprint, stop, excluded)
            if ctx.is_main:
                # Now, not once every fold is done: `--resume RUN` and a rerun into the same
                # --out read it to continue an interrupted fold with the run's own settings.
                write_json(run_dir / "config.json", c.to_json())
            results = []
            for i, split in enumerate(splits):
                fold_dir = run_dir / f"fold{i}"
                done = fold_dir / "summary.json"
                if done.exists() and json.loads(done.read_text()).get("finished"):
                    results.append(json.loads(done.read_text()))
                    continue
                log.info("fold %d/%d", i + 1, len(splits))
                results.append(train_split(c, ctx, split, fold_dir, fingerprint, stop, excluded))
            f1 = [r["best_macro_f1"] for r in results]
            summary = {
                "task": c.task,
                "model": c.model,
                "folds": len(splits),
                "fold_best_macro_f1": f1,
                "best_macro_f1": float(np.mean(f1)),
                "mean_macro_f1": float(np.mean(f1)),
                "std_macro_f1": float(np.std(f1)),
                "wall_s": round(sum(r["wall_s"] for r in results), 3),
                "images_per_s": round(float(np.mean([r["images_per_s"] for r in results])), 2),
                "data_fingerprint": fingerprint,
                "excluded": excluded,
            }
            if ctx.is_main:
                write_json(run_dir / "summary.json", summary)
            log.info(
                "folds: macro F1 %.4f ± %.4f", summary["mean_macro_f1"], summary["std_macro_f1"]
            )
            return summary
    finally:
        if ctx.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
