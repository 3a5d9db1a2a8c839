"""The prepared GPU check (`benches/gpu_check.sh`): one command, at most 8 minutes.

  1. gpu_feed: ceiling, fastmask uint8 (normalised on the GPU) and float (workers'
     float32), GPU decode (nvJPEG), torchvision DataLoader + PIL; images/s and fractions;
     a torch profiler trace of the uint8 case (top operators kept in the JSON).
  2. The trainer's CUDA paths, each a `fastmask run demo`-sized training that must lower
     its loss and resume: --amp fp16 (GradScaler), --amp bf16, --channels-last, --compile.
  3. torchrun --nproc_per_node 1: an NCCL all-reduce and DDP step, then the trainer.

Writes benches/results/gpu_check_<gpu>.json and the README's GPU table (between the
`gpu-check` markers). `--dry-run` runs the same steps on the CPU with tiny sizes (fp16 and
--compile are recorded as skipped: they need CUDA and a compiler), so the logic is tested
without a GPU (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
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

# Run under torchrun by step 3: NCCL (gloo on the CPU) all-reduce and one DDP step.
_DDP_PROBE = """
import os, torch, torch.distributed as dist
cuda = torch.cuda.is_available()
dist.init_process_group("nccl" if cuda else "gloo")
dev = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
t = torch.ones(4, device=dev)
dist.all_reduce(t)
m = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2).to(dev))
m(t[None]).sum().backward()
print("ddp-probe ok", dist.get_backend(), float(t.sum()))
dist.destroy_process_group()
"""


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f}s"
    return done.returncode == 0, (done.stdout + done.stderr)[-2000:]


def _losses(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f)]


def train_check(
    name: str, flags: list[str], data: Path, out: Path, base: list[str], timeout: float
) -> dict[str, Any]:
    """Train 2 epochs, then resume for a third: the loss must fall, the resume must finish."""
    run = out / name
    t0 = time.perf_counter()
    fm = [sys.executable, "-m", "fastmask", "train", "mask"]
    ok, log = _run([*fm, "--data", str(data), "--out", str(run), "--epochs", "2", *base, *flags],
                   timeout)  # fmt: skip
    res: dict[str, Any] = {"flags": flags}
    if ok:
        ok, log = _run([*fm, "--resume", str(run), "--epochs", "3"], timeout)
        res["resumed"] = ok
    if ok:
        losses = _losses(run)
        summary = json.loads((run / "summary.json").read_text())
        res["train_loss"] = losses
        res["loss_falls"] = len(losses) == 3 and losses[-1] < losses[0]
        res["finished"] = bool(summary.get("finished")) and summary.get("epochs_run") == 3
        ok = res["loss_falls"] and res["finished"]
    res["ok"] = ok
    res["seconds"] = round(time.perf_counter() - t0, 1)
    if not ok:
        res["log_tail"] = log
    return res


def readme_table(r: dict[str, Any]) -> str:
    feed = r.get("gpu_feed", {})
    rows = [
        f"GPU check on {r['gpu']} ({r['date']}, `benches/gpu_check.sh`"
        f"{', DRY RUN on the CPU: not GPU figures' if r['dry_run'] else ''}):",
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
    rows += ["", "| trainer path | loss falls | resumes | s |", "| --- | --- | --- | ---: |"]
    for name, t in r["train"].items():
        if "skipped" in t:
            rows.append(f"| {name} | skipped: {t['skipped']} | | |")
        else:
            rows.append(
                f"| {name} | {t.get('loss_falls', False)} | {t.get('resumed', False)} "
                f"| {t['seconds']} |"
            )
    for key in ("ddp_probe", "torchrun_train"):
        rows.append(f"| {key} | {r[key]['ok']} | | {r[key]['seconds']} |")
    return "\n".join(rows)


def write_readme(readme: Path, table: str) -> None:
    text = readme.read_text()
    block = f"{MARK_BEGIN}\n{table}\n{MARK_END}"
    if MARK_BEGIN in text:
        text = re.sub(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), block, text,
                      flags=re.S)  # fmt: skip
    else:
        text += "\n" + block + "\n"
    readme.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny")
    ap.add_argument("--work", default="/tmp/gpu_check", help="data and run folders")
    ap.add_argument("--results", default=str(ROOT / "benches" / "results"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--budget", type=float, default=460.0, help="seconds for the whole check")
    args = ap.parse_args(argv)

    import torch

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("gpu_check needs a CUDA GPU (or --dry-run on the CPU)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    left = lambda: max(10.0, args.budget - (time.perf_counter() - start))  # noqa: E731
    work = Path(args.work)
    gpu = "cpu-dry-run" if dry else torch.cuda.get_device_name().replace(" ", "_")
    r: dict[str, Any] = {"gpu": gpu, "dry_run": dry, "date": time.strftime("%Y-%m-%d"),
                         "torch": torch.__version__, "train": {}}  # fmt: skip
    data = work / "data"
    if not (data / "train").exists():
        from fastmask.synth import write_synthetic

        write_synthetic(data, people=12 if dry else 160, eval_people=0, seed=0, workers=2)

    # 1. feed
    feed_json = work / "gpu_feed.json"
    sizes = ["--steps", "2", "--warmup", "1", "--batch-size", "4", "--image-size", "32",
             "--dry-run"] if dry else ["--steps", "40", "--warmup", "8",
                                       "--profile", str(work / "profile")]  # fmt: skip
    ok, log = _run([sys.executable, str(ROOT / "benches" / "gpu_feed.py"), "--data", str(data),
                    "--json", str(feed_json), *sizes], min(240.0, left()))  # fmt: skip
    r["gpu_feed"] = json.loads(feed_json.read_text()) if ok else {"ok": False, "log_tail": log}

    # 2. trainer paths; a run-demo-sized model, tiny on the CPU
    base = (["--model", "resnet18", "--no-pretrained", "--image-size", "48", "--batch-size", "16",
             "--max-steps", "6", "--threads", "2", "--torch-threads", "1", "--device", "cpu"]
            if dry else ["--max-steps", "40", "--batch-size", "64"])  # fmt: skip
    for name, flags in TRAIN_VARIANTS:
        skip = {"amp_fp16": "fp16 autocast needs CUDA",
                "compile": "torch.compile takes minutes on the CPU"}  # fmt: skip
        if dry and name in skip:
            r["train"][name] = {"skipped": f"{skip[name]}; GPU run only"}
            continue
        r["train"][name] = train_check(name, flags, data, work / "runs", base, min(150.0, left()))

    # 3. torchrun, one process: NCCL itself, then the trainer under torchrun
    probe = work / "ddp_probe.py"
    probe.write_text(_DDP_PROBE)
    tr = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    t0 = time.perf_counter()
    ok, log = _run([*tr, str(probe)], min(120.0, left()), env={"OMP_NUM_THREADS": "1"})
    seconds = round(time.perf_counter() - t0, 1)
    r["ddp_probe"] = {"ok": ok and "ddp-probe ok" in log, "seconds": seconds}
    t0 = time.perf_counter()
    ok, log = _run([*tr, "-m", "fastmask", "train", "mask", "--data", str(data), "--out",
                    str(work / "runs" / "torchrun"), "--epochs", "1", *base],
                   min(150.0, left()), env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    r["torchrun_train"] = {"ok": ok, "seconds": round(time.perf_counter() - t0, 1)}
    if not ok:
        r["torchrun_train"]["log_tail"] = log
    r["seconds"] = round(time.perf_counter() - start, 1)

    checks = [t.get("ok", True) for t in r["train"].values()]
    checks += [r["ddp_probe"]["ok"], r["torchrun_train"]["ok"], "ceiling" in r["gpu_feed"]]
    r["all_ok"] = all(checks)
    out = Path(args.results) / f"gpu_check_{gpu}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2))
    table = readme_table(r)
    if not dry:
        write_readme(Path(args.readme), table)
    print(table)
    print(f"wrote {out} in {r['seconds']}s; all checks {'passed' if r['all_ok'] else 'FAILED'}")
    return 0 if r["all_ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "disabled")
    raise SystemExit(main())
