"""benches/gpu_check.sh's logic, without a GPU: its --dry-run takes the same steps on the CPU
(feed cases, trainer runs that must lower the loss and resume, torchrun) at tiny sizes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))

import gpu_check  # noqa: E402
import gpu_feed  # noqa: E402


def test_gpu_check_dry_run_takes_every_step(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    done = subprocess.run(
        ["bash", str(ROOT / "benches" / "gpu_check.sh"), "--dry-run", "--work",
         str(tmp_path / "work"), "--results", str(tmp_path), "--readme", str(readme)],
        capture_output=True, text=True, timeout=420,
        env={**os.environ, "PY": sys.executable},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads((tmp_path / "gpu_check_cpu-dry-run.json").read_text())
    assert r["dry_run"] and r["all_ok"]
    feed = r["gpu_feed"]
    for key in ("ceiling", "fastmask_uint8", "fastmask_float", "fastmask_gpu_decode",
                "torchvision_pil"):  # fmt: skip
        assert feed[key] > 0, key
    assert set(r["train"]) == {"amp_fp16", "amp_bf16", "channels_last", "compile"}
    for name in ("amp_bf16", "channels_last"):
        t = r["train"][name]
        assert t["ok"] and t["resumed"] and t["loss_falls"] and len(t["train_loss"]) == 3
    assert "skipped" in r["train"]["amp_fp16"] and "skipped" in r["train"]["compile"]
    assert r["ddp_probe"]["ok"] and r["torchrun_train"]["ok"]
    # torchrun with one process still trains through the process group and DDP
    assert r["torchrun_train"]["distributed"] is True
    assert r["complete"] and r["synth"]["ok"] and all(r["checks"].values())
    assert (tmp_path / "work" / "logs" / "amp_bf16_resume.log").exists()
    assert readme.read_text() == "# x\n"  # a dry run never writes the README's GPU table


def test_readme_table_replaces_its_block(tmp_path: Path):
    r = {"gpu": "H200", "date": "2026-01-01", "dry_run": False,
         "gpu_feed": {"ceiling": 2000.0, "fastmask_uint8": 1950.0, "torchvision_pil": 150.0},
         "train": {"amp_fp16": {"loss_falls": True, "resumed": True, "seconds": 30.0}},
         "ddp_probe": {"ok": True, "seconds": 5.0},
         "torchrun_train": {"ok": True, "seconds": 40.0}}  # fmt: skip
    readme = tmp_path / "README.md"
    readme.write_text("intro\n")
    gpu_check.write_readme(readme, gpu_check.readme_table(r))
    r["gpu_feed"]["fastmask_uint8"] = 1900.0
    gpu_check.write_readme(readme, gpu_check.readme_table(r))
    text = readme.read_text()
    assert text.count(gpu_check.MARK_BEGIN) == 1 and "| 1900 | 95% |" in text
    assert text.startswith("intro\n") and "| 1950 |" not in text


def run_check(tmp_path: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "benches" / "gpu_check.py"), "--dry-run", "--work",
         str(tmp_path / "work"), "--results", str(tmp_path), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw,
    )  # fmt: skip


def test_out_of_budget_steps_are_skipped_and_the_json_still_written(tmp_path: Path):
    proc = run_check(tmp_path, "--budget", "0")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    r = json.loads((tmp_path / "gpu_check_cpu-dry-run.json").read_text())
    assert r["complete"] and not r["all_ok"]
    for step in (r["synth"], r["gpu_feed"], r["train"]["amp_bf16"], r["ddp_probe"]):
        assert step["skipped"].startswith("out of time") and step["ok"] is False
    assert not (tmp_path / "work" / "data").exists()
    assert "FAILED: synth, gpu_feed" in out


def test_a_stopped_check_keeps_the_steps_it_finished(tmp_path: Path):
    """The shell's timeout stops gpu_check.py with SIGINT (SIGTERM alike): the steps done so
    far stay in the JSON, the running one is killed with its whole process group."""
    result = tmp_path / "gpu_check_cpu-dry-run.json"
    proc = run_check(tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if result.exists() and "synth" in json.loads(result.read_text()):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    r = json.loads(result.read_text())
    assert r["synth"]["ok"] and not r["complete"] and not r["all_ok"]
    assert "SIGTERM" in r["interrupted"] and "ddp_probe" not in r
    assert r["checks"]["ddp_probe"] is False
    assert "INCOMPLETE" in gpu_check.readme_table(r) and "| ddp_probe | not run |" in out


def test_the_shells_timeout_still_leaves_the_json(tmp_path: Path):
    """gpu_check.sh stops gpu_check.py with SIGINT at its time limit (480 s; 8 s here) and
    exits 124, as `timeout` does."""
    t0 = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / "benches" / "gpu_check.sh"), "--dry-run", "--work",
         str(tmp_path / "work"), "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PY": sys.executable, "GPU_CHECK_TIMEOUT": "8"},
    )  # fmt: skip
    assert done.returncode == 124 and time.monotonic() - t0 < 25, done.stdout + done.stderr
    r = json.loads((tmp_path / "gpu_check_cpu-dry-run.json").read_text())
    assert not r["complete"] and "stopped by SIGINT" in r["interrupted"]
    assert "INCOMPLETE" in done.stdout


def test_run_kills_the_whole_process_group_on_timeout(tmp_path: Path):
    pid_file = tmp_path / "pid"
    script = f"sleep 60 & echo $! > {pid_file}; echo started; wait"
    t0 = time.monotonic()
    ok, tail = gpu_check._run(["bash", "-c", script], 2.0, tmp_path / "log.txt")
    assert not ok and time.monotonic() - t0 < 20
    assert "started" in tail and "timed out after 2s" in tail
    grandchild = Path(f"/proc/{int(pid_file.read_text())}/status")
    time.sleep(0.2)
    # gone, or a zombie that this container's init has not reaped yet
    assert not grandchild.exists() or "\nState:\tZ" in grandchild.read_text()
    assert gpu_check._run([sys.executable, "-c", "print('hi')"], 30, tmp_path / "ok.txt") == (
        True,
        f"$ {sys.executable} -c print('hi')\nhi\n",
    )


def test_readme_table_of_a_partial_run():
    r = {"gpu": "NVIDIA_H200", "date": "2026-01-01", "dry_run": False, "complete": False,
         "interrupted": "stopped by SIGINT after 480s", "train": {
             "amp_fp16": {"ok": True, "loss_falls": True, "resumed": True, "seconds": 30.0},
             "amp_bf16": {"skipped": "out of time (5s of --budget left)", "ok": False}},
         "gpu_feed": {"ceiling": 2000.0, "fastmask_uint8": 1900.0,
                      "errors": {"fastmask_gpu_decode": "RuntimeError: nvjpeg"}}}  # fmt: skip
    table = gpu_check.readme_table(r)
    assert "INCOMPLETE: stopped by SIGINT" in table
    assert "| fastmask, uint8 to the device, normalised there | 1900 | 95% |" in table
    assert '| fastmask, `decode="gpu"` (nvJPEG) | FAILED | |' in table
    assert "| torchvision DataLoader + PIL | not run | |" in table
    assert "| amp_bf16 | skipped: out of time (5s of --budget left) | | |" in table
    assert "| compile | not run | | |" in table and "| torchrun_train | not run | | |" in table
    checks = gpu_check.all_checks(r)
    assert checks["amp_fp16"] and not checks["amp_bf16"] and not checks["gpu_feed"]


def test_gpu_feed_keeps_the_other_cases_when_one_fails(tmp_path: Path, monkeypatch):
    import fastmask.gpu_decode

    def broken(*args, **kw):
        raise RuntimeError("nvjpeg: no hardware decoder")

    monkeypatch.setattr(fastmask.gpu_decode, "GpuJpegLoader", broken)
    out = tmp_path / "feed.json"
    rc = gpu_feed.main(["--data", str(tmp_path / "data"), "--people", "4", "--json", str(out),
                        "--steps", "1", "--warmup", "1", "--batch-size", "4", "--image-size",
                        "32", "--threads", "1", "--dry-run"])  # fmt: skip
    r = json.loads(out.read_text())
    assert rc == 1 and "no hardware decoder" in r["errors"]["fastmask_gpu_decode"]
    assert "fastmask_gpu_decode" not in r
    for key in ("ceiling", "fastmask_uint8", "fastmask_float", "torchvision_pil"):
        assert r[key] > 0, key
    assert r["fastmask_vs_torchvision"] > 0


def fake_wheel(folder: Path) -> Path:
    """A stand-in fastmask wheel: what the script's offline install step needs."""
    whl = folder / "fastmask-0.0.1-py3-none-any.whl"
    info = "fastmask-0.0.1.dist-info"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("fastmask/__init__.py", "")
        z.writestr("fastmask/_native.py", "")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: fastmask\nVersion: 0.0.1\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                   "Root-Is-Purelib: true\nTag: py3-none-any\n")  # fmt: skip
        z.writestr(f"{info}/RECORD", "")
    return whl


def test_shell_installs_the_wheel_offline_and_refuses_without_fastmask(tmp_path: Path):
    """On a GPU machine there is no .venv and no registry: the wheel goes in with --no-deps
    --no-index into a temporary folder on PYTHONPATH; with no fastmask at all, a clear error."""
    sh = str(ROOT / "benches" / "gpu_check.sh")
    env = {**os.environ, "PY": sys.executable, "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", sh, "--wheel", str(fake_wheel(tmp_path)), "--help"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "installing" in done.stdout and "--dry-run" in done.stdout  # arguments passed on
    (site,) = tmp_path.glob("gpu_check_site.*")
    assert (site / "fastmask" / "_native.py").exists()
    if list((ROOT / "dist").glob("fastmask-*.whl")):
        return  # a built wheel would be installed: the refusal cannot happen in this checkout
    # A python that cannot import fastmask (isolated, no site-packages) and no wheel given
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    bare.chmod(0o755)
    done = subprocess.run(["bash", sh, "--dry-run"], capture_output=True, text=True,
                          env={**env, "PY": str(bare)}, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "cannot import fastmask" in done.stderr
