"""The prepared GPU check (`benches/gpu_check.sh`): one command, at most 8 minutes.

  0. The data: `fastmask synth` on the machine itself (no network), unless already there.
  1. gpu_feed: ceiling, fastmask uint8 (normalised on the GPU) and float (workers'
     float32), GPU decode (nvJPEG), torchvision DataLoader + PIL; images/s and fractions;
     a torch profiler trace of the uint8 case (top operators kept in the JSON).
  2. The trainer's CUDA paths, each a `fastmask run demo`-sized training from random weights
     (no download) that must lower its loss and resume: --amp fp16 (GradScaler), --amp bf16,
     --channels-last; --compile runs last, as it is the slowest and least predictable.
  3. torchrun --nproc_per_node 1: an NCCL all-reduce and DDP step, then the trainer (three
     heads, in a one-process NCCL group, so its DDP code runs).

Writes benches/results/gpu_check_<gpu>.json after every step, so a step that hangs or a
timeout keeps what was measured, and at the end (also when stopped by SIGINT/SIGTERM) the
README's GPU table (between the `gpu-check` markers). Every step has its own time limit
within --budget; one with too little time left is recorded as skipped. Full logs go to
WORK/logs. `--dry-run` runs the same steps on the CPU with tiny sizes (fp16 and --compile
are recorded as skipped: they need CUDA and a compiler), so the logic is tested without a
GPU (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TRAIN_VARIANTS: list[tuple[str, list[str]]] = [
    ("amp_fp16", ["--amp", "fp16"]),
    ("amp_bf16", ["--amp", "bf16"]),
    ("channels_last", ["--channels-last", "--amp", "bf16"]),
    ("compile", ["--compile", "--amp", "bf16"]),
]
MARK_BEGIN, MARK_END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"
# Seconds each step may take at most (always also within what is left of --budget), and the
# least a step needs: with less left it is recorded as skipped rather than started.
LIMIT_S = {"synth": 90.0, "gpu_feed": 200.0, "train": 100.0, "compile": 200.0,
           "ddp_probe": 60.0, "torchrun_train": 120.0}  # fmt: skip
MIN_START_S = 20.0

# Run under torchrun by step 3: NCCL (gloo on the CPU) all-reduce and one DDP step.
_DDP_PROBE = """
import os, torch, torch.distributed as dist
cuda = torch.cuda.is_available()
dev = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
if cuda:
    torch.cuda.set_device(dev)
dist.init_process_group("nccl" if cuda else "gloo")
t = torch.ones(4, device=dev)
dist.all_reduce(t)
m = torch.nn.parallel.DistributedDataParallel(
    torch.nn.Linear(4, 2).to(dev), device_ids=[dev.index] if cuda else None
)
m(t[None]).sum().backward()
assert all(p.grad is not None for p in m.parameters())
print("ddp-probe ok", dist.get_backend(), float(t.sum()))
dist.destroy_process_group()
"""


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """The command and everything it started (torchrun's workers, compile workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _run(
    cmd: list[str], timeout: float, log: Path, env: dict[str, str] | None = None
) -> tuple[bool, str]:
    """Run `cmd` in its own process group with a time limit; the whole output goes to `log`,
    its last 2000 characters are returned. On a timeout or an interrupt the group is killed,
    so nothing is left running on the GPU."""
    log.parent.mkdir(parents=True, exist_ok=True)
    group: dict[str, Any] = (
        {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
    )
    with open(log, "w+") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})}, **group,
        )  # fmt: skip
        try:
            rc: int | None = proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            rc = None
        finally:  # also on KeyboardInterrupt: leave no process behind
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
        if rc is None:
            f.write(f"\ntimed out after {timeout:.0f}s\n")
        f.seek(0)
        tail = f.read()[-2000:]
    return rc == 0, tail


def _losses(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f)]


def _summary(run: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((run / "summary.json").read_text()))
    except (OSError, ValueError):
        return {}


def train_check(
    name: str,
    flags: list[str],
    data: Path,
    out: Path,
    base: list[str],
    limit: Callable[[], float],
    logs: Path,
) -> dict[str, Any]:
    """Train 2 epochs, then resume for a third: the loss must fall, the resume must finish.
    `limit()` gives each of the two runs its time limit."""
    run = out / name
    shutil.rmtree(run, ignore_errors=True)  # a run left by an earlier check would be resumed
    t0 = time.perf_counter()
    fm = [sys.executable, "-m", "fastmask", "train", "mask"]
    ok, log = _run([*fm, "--data", str(data), "--out", str(run), "--epochs", "2", *base, *flags],
                   limit(), logs / f"{name}.log")  # fmt: skip
    res: dict[str, Any] = {"flags": flags}
    if ok:
        ok, log = _run([*fm, "--resume", str(run), "--epochs", "3"], limit(),
                       logs / f"{name}_resume.log")  # fmt: skip
        res["resumed"] = ok
    if ok:
        try:
            losses = _losses(run)
        except (OSError, ValueError, KeyError) as err:
            losses, log = [], f"metrics.csv: {err!r}\n{log}"
        summary = _summary(run)
        res["train_loss"] = losses
        res["loss_falls"] = len(losses) == 3 and losses[-1] < losses[0]
        res["finished"] = bool(summary.get("finished")) and summary.get("epochs_run") == 3
        ok = res["loss_falls"] and res["finished"]
    res["ok"] = ok
    res["seconds"] = round(time.perf_counter() - t0, 1)
    if not ok:
        res["log_tail"] = log
    return res


def _step_ok(step: dict[str, Any] | None) -> bool:
    return bool(step and step.get("ok"))


def all_checks(r: dict[str, Any]) -> dict[str, bool]:
    """Every check by name; a step that did not run (interrupted, out of time) fails."""
    checks = {"synth": _step_ok(r.get("synth")), "gpu_feed": _step_ok(r.get("gpu_feed"))}
    for name, _ in TRAIN_VARIANTS:
        checks[name] = _step_ok(r["train"].get(name))
    for key in ("ddp_probe", "torchrun_train"):
        checks[key] = _step_ok(r.get(key))
    return checks


def _cell(step: dict[str, Any] | None) -> str:
    if not step:
        return "not run"
    if "skipped" in step:
        return f"skipped: {step['skipped']}"
    return "ok" if step.get("ok") else "FAILED"


def readme_table(r: dict[str, Any]) -> str:
    feed = r.get("gpu_feed") or {}
    rows = [
        f"GPU check on {r['gpu']} ({r['date']}, torch {r.get('torch', '?')}, "
        f"`benches/gpu_check.sh`{', DRY RUN on the CPU: not GPU figures' if r['dry_run'] else ''}"
        f"{'' if r.get('complete', True) else ', INCOMPLETE: ' + r.get('interrupted', '')}):",
        "",
        "| feed | images/s | of the ceiling |",
        "| --- | ---: | ---: |",
    ]
    for key, label in [
        ("ceiling", "random tensors already on the device (ceiling)"),
        ("fastmask_uint8", "fastmask, uint8 to the device, normalised there"),
        ("fastmask_float", "fastmask, float32 written by the workers"),
        ("fastmask_gpu_decode", 'fastmask, `decode="gpu"` (nvJPEG)'),
        ("torchvision_pil", "torchvision DataLoader + PIL"),
    ]:
        if key in feed:
            frac = feed[key] / feed["ceiling"] if feed.get("ceiling") else float("nan")
            rows.append(f"| {label} | {feed[key]:.0f} | {frac:.0%} |")
        elif key in feed.get("errors", {}):
            rows.append(f"| {label} | FAILED | |")
        else:
            rows.append(f"| {label} | not run | |")
    rows += ["", "| trainer path | loss falls | resumes | s |", "| --- | --- | --- | ---: |"]
    for name, _ in TRAIN_VARIANTS:
        t = r["train"].get(name)
        if not t or "skipped" in t:
            rows.append(f"| {name} | {_cell(t)} | | |")
        else:
            rows.append(
                f"| {name} | {t.get('loss_falls', False)} | {t.get('resumed', False)} "
                f"| {t['seconds']} |"
            )
    for key in ("ddp_probe", "torchrun_train"):
        step = r.get(key) or {}
        rows.append(
            f"| {key} | {_cell(step)} | | {step.get('seconds', '')} |".replace("|  |", "| |")
        )
    return "\n".join(rows)


def write_readme(readme: Path, table: str) -> None:
    text = readme.read_text()
    block = f"{MARK_BEGIN}\n{table}\n{MARK_END}"
    if MARK_BEGIN in text:
        text = re.sub(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), lambda _: block,
                      text, flags=re.S)  # fmt: skip
    else:
        text += "\n" + block + "\n"
    readme.write_text(text)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny")
    ap.add_argument("--work", default="/tmp/gpu_check", help="data, run folders and logs")
    ap.add_argument("--results", default=str(ROOT / "benches" / "results"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check")
    args = ap.parse_args(argv)

    import torch

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("gpu_check needs a CUDA GPU (or --dry-run on the CPU)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - start)  # noqa: E731
    work = Path(args.work)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    gpu = "cpu-dry-run" if dry else re.sub(r"[^\w.-]+", "_", torch.cuda.get_device_name())
    r: dict[str, Any] = {"gpu": gpu, "dry_run": dry, "date": time.strftime("%Y-%m-%d"),
                         "torch": torch.__version__, "python": sys.version.split()[0],
                         "complete": False, "train": {}}  # fmt: skip
    out = Path(args.results) / f"gpu_check_{gpu}.json"
    _write_json(out, r)
    # The shell's timeout sends SIGINT: handled explicitly, as a background job may have
    # inherited it ignored (then Python would not raise KeyboardInterrupt).
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _steps(r, args, dry, work, logs, left, lambda: _write_json(out, r))
        r["complete"] = True
    except KeyboardInterrupt as err:
        r["interrupted"] = (
            f"stopped by {err or 'SIGINT'} after {time.perf_counter() - start:.0f}s "
            "(the shell's timeout?); the steps not shown did not run"
        )
    except Exception as err:  # a bug here must not lose the steps already measured
        traceback.print_exc()
        r["interrupted"] = f"gpu_check.py failed: {err!r}"[-1500:]
    finally:
        for s in previous:  # the results are written whatever comes now
            signal.signal(s, signal.SIG_IGN)
        r["seconds"] = round(time.perf_counter() - start, 1)
        r["checks"] = all_checks(r)
        r["all_ok"] = r["complete"] and all(r["checks"].values())
        _write_json(out, r)
        table = readme_table(r)
        if not dry:
            write_readme(Path(args.readme), table)
        print(table)
        failed = ", ".join(k for k, v in r["checks"].items() if not v) or "interrupted"
        verdict = "all checks passed" if r["all_ok"] else f"FAILED: {failed}"
        print(f"wrote {out} in {r['seconds']}s; {verdict}")
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0 if r["all_ok"] else 1


def _steps(
    r: dict[str, Any],
    args: argparse.Namespace,
    dry: bool,
    work: Path,
    logs: Path,
    left: Callable[[], float],
    save: Callable[[], None],
) -> None:
    def limit(step: str) -> float:
        return min(LIMIT_S[step], left())

    def out_of_time(step: str) -> dict[str, Any] | None:
        if left() >= MIN_START_S:
            return None
        return {"skipped": f"out of time ({max(left(), 0):.0f}s of --budget left)", "ok": False}

    # 0. data, written here by `fastmask synth` (no network); train.csv is written last
    data = work / "data"
    t0 = time.perf_counter()
    if (data / "train" / "train.csv").exists():
        r["synth"] = {"ok": True, "reused": str(data), "seconds": 0.0}
    elif skipped := out_of_time("synth"):
        r["synth"] = skipped
    else:
        people = "12" if dry else "160"
        ok, log = _run([sys.executable, "-m", "fastmask", "synth", "--out", str(data), "--people",
                        people, "--eval-people", "0", "--seed", "0", "--force"],
                       limit("synth"), logs / "synth.log")  # fmt: skip
        seconds = round(time.perf_counter() - t0, 1)
        r["synth"] = {"ok": ok, "people": int(people), "seconds": seconds}
        if not ok:
            r["synth"]["log_tail"] = log
    save()

    # 1. feed
    feed_json = work / "gpu_feed.json"
    feed_json.unlink(missing_ok=True)
    sizes = ["--steps", "2", "--warmup", "1", "--batch-size", "4", "--image-size", "32",
             "--dry-run"] if dry else ["--steps", "30", "--warmup", "6",
                                       "--profile", str(work / "profile")]  # fmt: skip
    r["gpu_feed"] = out_of_time("gpu_feed") or {}
    if not r["gpu_feed"]:
        t0 = time.perf_counter()
        ok, log = _run([sys.executable, str(ROOT / "benches" / "gpu_feed.py"), "--data",
                        str(data), "--json", str(feed_json), *sizes],
                       limit("gpu_feed"), logs / "gpu_feed.log")  # fmt: skip
        # What it measured before a failure or a timeout is kept (it writes after each case).
        try:
            feed = json.loads(feed_json.read_text()) if feed_json.exists() else {}
        except ValueError as err:
            feed = {"json_error": repr(err)}
        feed["ok"] = ok and "ceiling" in feed and not feed.get("errors")
        feed["seconds"] = round(time.perf_counter() - t0, 1)
        if not feed["ok"]:
            feed["log_tail"] = log
        r["gpu_feed"] = feed
    save()

    # 2. trainer paths; a run-demo-sized model from random weights (the machine is offline),
    # tiny on the CPU. Batch 56: 896 training and 224 validation images (160 people, 7 each,
    # a fifth held out) make whole batches, so --compile compiles no extra partial-batch graph.
    base = (["--model", "resnet18", "--no-pretrained", "--image-size", "48", "--batch-size", "16",
             "--max-steps", "6", "--threads", "2", "--torch-threads", "1", "--device", "cpu"]
            if dry else ["--no-pretrained", "--max-steps", "40", "--batch-size", "56"])  # fmt: skip
    dry_skip = {"amp_fp16": "fp16 autocast needs CUDA",
                "compile": "torch.compile takes minutes on the CPU"}  # fmt: skip

    def train_step(name: str, flags: list[str]) -> None:
        if dry and name in dry_skip:
            r["train"][name] = {"skipped": f"{dry_skip[name]}; GPU run only", "ok": True}
        else:
            kind = "compile" if name == "compile" else "train"
            r["train"][name] = out_of_time(kind) or train_check(
                name, flags, data, work / "runs", base, lambda: limit(kind), logs
            )
        save()

    for name, flags in TRAIN_VARIANTS[:-1]:
        train_step(name, flags)

    # 3. torchrun, one process: NCCL itself, then the trainer under torchrun
    probe = work / "ddp_probe.py"
    probe.write_text(_DDP_PROBE)
    tr = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    env = {"OMP_NUM_THREADS": "1"}
    r["ddp_probe"] = out_of_time("ddp_probe") or {}
    if not r["ddp_probe"]:
        t0 = time.perf_counter()
        ok, log = _run([*tr, str(probe)], limit("ddp_probe"), logs / "ddp_probe.log", env)
        ok = ok and "ddp-probe ok" in log
        r["ddp_probe"] = {"ok": ok, "seconds": round(time.perf_counter() - t0, 1)}
        if not ok:
            r["ddp_probe"]["log_tail"] = log
    save()
    r["torchrun_train"] = out_of_time("torchrun_train") or {}
    if not r["torchrun_train"]:
        run = work / "runs" / "torchrun"
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        ok, log = _run([*tr, "-m", "fastmask", "train", "multi", "--data", str(data), "--out",
                        str(run), "--epochs", "1", *base], limit("torchrun_train"),
                       logs / "torchrun_train.log", env)  # fmt: skip
        summary = _summary(run)
        res = {"ok": ok and bool(summary.get("finished")) and bool(summary.get("distributed")),
               "distributed": summary.get("distributed"),
               "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        if not res["ok"]:
            res["log_tail"] = log
        r["torchrun_train"] = res
    save()

    # 4. --compile last: the slowest step, and a hang there costs no other step
    train_step(*TRAIN_VARIANTS[-1])


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "disabled")
    raise SystemExit(main())
