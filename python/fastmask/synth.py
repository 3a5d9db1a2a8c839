"""A synthetic data set in exactly the competition layout (see DATASET.md), drawn with PIL.

Each person is a cartoon face (drawn by `fastmask.synthdraw`) whose labels leave visible
cues, so that a small CNN can learn them without the task being trivial. This module plans
the ids, labels, file names and junk files up front from one generator, then writes them.

Every person is drawn from a generator seeded by (seed, stream, index), never from global
state, so output is byte-identical for the same arguments whatever the number of workers.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastmask.errors import FastmaskError
from fastmask.synthdraw import STEMS, draw_person, render, save_image

log = logging.getLogger(__name__)

MASK_OF_STEM = {"incorrect_mask": 1, "normal": 2}  # every other stem is 0 (wear)
AGE_BOUNDS = (30, 60)
RACE = "Asian"

# Ids the published label corrections name: kept out so default corrections are no-ops here.
_RESERVED_IDS = frozenset(
    [6359, 6360, 6361, 6362, 6363, 6364, 1720, 1498, 4432, 5223, 20, 4418, 5227, 1009, 1064]
    + [1637, 1666, 1852, 4348, 225, 664, 767, 1509, 3113, 3223, 4281, 6424, 667, 725, 736]
    + [817, 3780, 6504]
)
_TRAIN_STREAM, _EVAL_STREAM, _PLAN_STREAM, _JUNK_STREAM = 0, 1, 2, 3


@dataclass(frozen=True)
class SynthSummary:
    """What write_synthetic wrote."""

    out: Path
    people: int
    train_images: int
    eval_people: int
    eval_images: int
    junk_files: int
    seconds: float


# ---------------------------------------------------------------------------------------
# Plan: ids, labels, file names and junk, all decided up front from one generator
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """One person to draw: where to write, under which names, and the labels to show."""

    seed: int
    stream: int
    index: int
    female: bool
    true_age: float
    folder: str
    names: tuple[str, ...]  # one file name per STEMS entry
    junk: tuple[str, ...]  # `._*` file names to write inside the folder


@dataclass(frozen=True)
class _TrainRow:
    id: str
    gender: str
    age: int
    path: str


def _written_age(true_age: float) -> int:
    return int(min(60, max(18, math.floor(true_age))))


def _age_band(age: int) -> int:
    return int(age >= AGE_BOUNDS[0]) + int(age >= AGE_BOUNDS[1])


def _draw_labels(rng: np.random.Generator, n: int) -> tuple[list[bool], list[float]]:
    """Gender ~38% male; true age by band 47/46/7%, spread 15..80 so the clipping bites."""
    female = rng.random(n) < 0.62
    band = rng.choice(3, size=n, p=[0.47, 0.46, 0.07])
    lo = np.array([15.0, 30.0, 60.0])[band]
    hi = np.array([30.0, 60.0, 80.0])[band]
    true_age = lo + (hi - lo) * rng.random(n)
    return [bool(x) for x in female], [float(x) for x in true_age]


def _count(n: int, frac: float, at_least_from: int) -> int:
    """round(n * frac), but at least 1 once n reaches at_least_from, so quirks always show."""
    k = round(n * frac)
    return max(k, 1) if n >= at_least_from else k


def _plan_train(
    rng: np.random.Generator, out: Path, people: int, seed: int
) -> tuple[list[_TrainRow], list[_Job], list[str]]:
    """Rows of train.csv, jobs to draw, and junk names beside the person folders."""
    has_dup = people >= 50
    n_unique = people - int(has_dup)
    pool = np.array([k for k in range(1, max(7000, 3 * people)) if k not in _RESERVED_IDS])
    numbers = np.sort(rng.choice(pool, size=n_unique, replace=False))
    ids = [f"{k:06d}" for k in numbers]
    female, true_age = _draw_labels(rng, n_unique)
    dup_of = int(rng.integers(n_unique)) if has_dup else -1
    # A few ids carry a suffix like 001498-1; never the duplicated one.
    candidates = [i for i in range(n_unique) if i != dup_of]
    n_suffix = min(len(candidates), _count(people, 0.015, 50))
    for i in rng.choice(candidates, size=n_suffix, replace=False) if n_suffix else []:
        ids[int(i)] += f"-{int(rng.integers(1, 3))}"
    if has_dup:
        # Same id, another person of the same gender written one year apart (like 003397).
        age = _written_age(true_age[dup_of])
        dup_age = age - 1 if age > 18 else age + 1
        ids.append(ids[dup_of])
        female.append(female[dup_of])
        true_age.append(dup_age + float(rng.uniform(0.05, 0.95)))

    # Extensions per person: .png (~3%), .jpeg (~2%), a few folders mixing .jpg and .jpeg.
    exts = [[".jpg"] * len(STEMS) for _ in range(people)]
    order = [int(i) for i in rng.permutation(people)]
    n_png, n_jpeg, n_mixed = (_count(people, f, 10) for f in (0.03, 0.02, 0.01))
    for i in order[:n_png]:
        exts[i] = [".png"] * len(STEMS)
    for i in order[n_png : n_png + n_jpeg]:
        exts[i] = [".jpeg"] * len(STEMS)
    for i in order[n_png + n_jpeg : n_png + n_jpeg + n_mixed]:
        k = int(rng.integers(1, 4))
        for s in rng.choice(len(STEMS), size=k, replace=False):
            exts[i][int(s)] = ".jpeg"

    junk_beside = {int(i) for i in rng.choice(people, _count(people, 0.3, 1), replace=False)}
    junk_inside = {int(i) for i in rng.choice(people, _count(people, 0.1, 1), replace=False)}
    rows: list[_TrainRow] = []
    jobs: list[_Job] = []
    beside: list[str] = []
    images = out / "train" / "images"
    for i in range(people):
        gender = "female" if female[i] else "male"
        age = _written_age(true_age[i])
        folder = f"{ids[i]}_{gender}_{RACE}_{age}"
        names = tuple(stem + ext for stem, ext in zip(STEMS, exts[i], strict=True))
        junk: tuple[str, ...] = ()
        if i in junk_inside:
            k = int(rng.integers(1, 3))
            junk = tuple("._" + names[int(s)] for s in sorted(rng.choice(7, k, replace=False)))
        if i in junk_beside:
            beside.append("._" + folder)
        rows.append(_TrainRow(ids[i], gender, age, folder))
        jobs.append(
            _Job(seed, _TRAIN_STREAM, i, female[i], true_age[i], str(images / folder), names, junk)
        )
    if len({r.path for r in rows}) != people:
        raise AssertionError("synthetic folder names collide")  # the plan guarantees this
    rows.sort(key=lambda r: r.path)
    return rows, jobs, beside


def _plan_eval(
    rng: np.random.Generator, out: Path, eval_people: int, seed: int
) -> tuple[list[tuple[str, int]], list[_Job], list[str]]:
    """(ImageID, true class) in info.csv order, jobs to draw, junk names in eval/images."""
    female, true_age = _draw_labels(rng, eval_people)
    images = out / "eval" / "images"
    jobs: list[_Job] = []
    labelled: list[tuple[str, int]] = []
    for i in range(eval_people):
        names = tuple(rng.bytes(20).hex() + ".jpg" for _ in STEMS)
        band = _age_band(_written_age(true_age[i]))
        for stem, name in zip(STEMS, names, strict=True):
            labelled.append((name, MASK_OF_STEM.get(stem, 0) * 6 + int(female[i]) * 3 + band))
        jobs.append(_Job(seed, _EVAL_STREAM, i, female[i], true_age[i], str(images), names, ()))
    if len({name for name, _ in labelled}) != len(labelled):
        raise AssertionError("synthetic eval names collide")  # 160 random bits each
    shuffled = [labelled[int(i)] for i in rng.permutation(len(labelled))]
    n_junk = _count(len(labelled), 0.02, 1)
    junk = ["._" + shuffled[int(i)][0] for i in rng.choice(len(labelled), n_junk, replace=False)]
    return shuffled, jobs, sorted(junk)


def _junk_bytes(seed: int, name: str) -> bytes:
    """AppleDouble-looking garbage: the magic, then padding; never a decodable image."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    rng = np.random.default_rng([seed, _JUNK_STREAM, int.from_bytes(digest[:8], "little")])
    size = int(rng.integers(82, 4097))
    head = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02"
    body = bytearray(size - len(head))
    body[: min(len(body), 64)] = rng.bytes(min(len(body), 64))
    return head + bytes(body)


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------


def _run_job(job: _Job) -> int:
    """Draw and write one person's 7 images (and junk); returns the number of files written."""
    rng = np.random.default_rng([job.seed, job.stream, job.index])
    person = draw_person(rng, job.female, job.true_age)
    folder = Path(job.folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, name in zip(STEMS, job.names, strict=True):
        save_image(render(person, stem, rng), folder / name, rng)
    for name in job.junk:
        (folder / name).write_bytes(_junk_bytes(job.seed, f"{job.stream}/{job.index}/{name}"))
    return len(job.names) + len(job.junk)


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write to a temporary name, then rename, so an interrupted run leaves no half CSV."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FastmaskError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FastmaskError(
                f"--out {out} is not empty; pass --force to replace its train/ and eval/"
            )
        for part in ("train", "eval"):
            target = out / part
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    (out / "train" / "images").mkdir(parents=True, exist_ok=True)
    (out / "eval" / "images").mkdir(parents=True, exist_ok=True)


def write_synthetic(
    out: str | Path,
    people: int = 100,
    eval_people: int = 20,
    seed: int = 0,
    workers: int | None = None,
    *,
    force: bool = False,
) -> SynthSummary:
    """Write a synthetic data set in the competition layout under `out`.

    train/ gets `people` person folders (7 images each) and train.csv; eval/ gets
    7 * `eval_people` images, info.csv (ans = 0) and truth.csv (the true classes). Same
    arguments give byte-identical files, whatever `workers` is.
    """
    for name, value, least in (("people", people, 1), ("eval-people", eval_people, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise FastmaskError(f"--{name} must be an integer >= {least}, got {value!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise FastmaskError(f"--seed must be an integer >= 0, got {seed!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise FastmaskError(f"--workers must be an integer >= 1, got {workers!r}")
    start = time.perf_counter()
    root = Path(out)
    _prepare_out(root, force)

    plan_rng = np.random.default_rng([seed, _PLAN_STREAM])
    rows, train_jobs, beside = _plan_train(plan_rng, root, people, seed)
    labelled, eval_jobs, eval_junk = _plan_eval(plan_rng, root, eval_people, seed)
    jobs = train_jobs + eval_jobs
    n_workers = min(workers or os.cpu_count() or 1, len(jobs))
    if n_workers <= 1:
        written = sum(_run_job(job) for job in jobs)
    else:
        # spawn, not fork: the caller may hold threads (torch, rayon) that fork would break.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(n_workers) as pool:
            written = sum(pool.imap_unordered(_run_job, jobs, chunksize=1))
    for name in beside:
        (root / "train" / "images" / name).write_bytes(_junk_bytes(seed, f"train/{name}"))
    for name in eval_junk:
        (root / "eval" / "images" / name).write_bytes(_junk_bytes(seed, f"eval/{name}"))

    _write_csv(
        root / "train" / "train.csv",
        ("id", "gender", "race", "age", "path"),
        [(r.id, r.gender, RACE, r.age, r.path) for r in rows],
    )
    _write_csv(root / "eval" / "info.csv", ("ImageID", "ans"), [(n, 0) for n, _ in labelled])
    _write_csv(root / "eval" / "truth.csv", ("ImageID", "ans"), labelled)

    n_images = len(STEMS) * (people + eval_people)
    junk_files = written - n_images + len(beside) + len(eval_junk)
    summary = SynthSummary(
        out=root,
        people=people,
        train_images=len(STEMS) * people,
        eval_people=eval_people,
        eval_images=len(STEMS) * eval_people,
        junk_files=junk_files,
        seconds=time.perf_counter() - start,
    )
    log.info(
        "synth: %d people (%d train images), %d eval people (%d eval images) in %s in %.1f s",
        summary.people,
        summary.train_images,
        summary.eval_people,
        summary.eval_images,
        root,
        summary.seconds,
    )
    return summary


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `synth` command."""
    p = sub.add_parser(
        "synth",
        help="write a synthetic data set in the competition layout",
        description="Write a synthetic data set (train/ and eval/) in the competition layout, "
        "with eval/truth.csv holding the true classes. Deterministic per seed.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (DATA)")
    p.add_argument("--people", type=int, default=100, help="training people (default 100)")
    p.add_argument("--eval-people", type=int, default=20, help="eval people (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--workers", type=int, default=None, help="processes (default: the number of CPUs)"
    )
    p.add_argument("--force", action="store_true", help="replace train/ and eval/ under --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    write_synthetic(
        args.out,
        people=args.people,
        eval_people=args.eval_people,
        seed=args.seed,
        workers=args.workers,
        force=args.force,
    )
    return 0
