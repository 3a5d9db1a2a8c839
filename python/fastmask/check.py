"""`python -m fastmask check DATA`: find every bad file of a data set before a run meets it.

files -> **check** -> data index -> native loader -> trainer -> predictions -> combine -> CSV

Two depths, both parallel in the native module without the GIL:
- the header check (`header_problems`): headers parse and the file ends with its format's
  end marker; what `train` runs on every image before epoch 1 (seconds for 19k files);
- the full check (`check_data`, the command): every train and eval image decoded once,
  its size checked and its bytes hashed, so an image repeated across people shows up.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastmask import _native
from fastmask.argtypes import non_negative_int

log = logging.getLogger(__name__)

# The competition's images: 384 wide, 512 high (DATASET.md).
EXPECTED_SIZE = (384, 512)
_CHUNK = 1024  # files per native call: progress steps without a noticeable cost


@dataclass
class FileResult:
    """One file as the native check saw it; width/height after EXIF orientation."""

    path: str
    bytes: int
    width: int
    height: int
    orientation: int
    hash: int
    error: str | None


def check_files(
    paths: Sequence[str], *, full: bool, threads: int | None = None, progress: bool = False
) -> list[FileResult]:
    """Run the native header (full=False) or full check on every path, in order."""
    from tqdm.auto import tqdm

    out: list[FileResult] = []
    with tqdm(
        total=len(paths),
        desc="decode" if full else "headers",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for i in range(0, len(paths), _CHUNK):
            part = [os.fspath(p) for p in paths[i : i + _CHUNK]]
            for p, (size, w, h, orient, digest, error) in zip(
                part, _native.check_images(part, full=full, threads=threads or 0), strict=True
            ):
                wo, ho = (h, w) if orient >= 5 else (w, h)
                out.append(FileResult(p, size, wo, ho, orient, digest, error))
            bar.update(len(part))
    return out


def header_problems(
    paths: Sequence[str], threads: int | None = None, full: bool = False
) -> list[dict[str, str]]:
    """{path, reason} for every file the header check refuses (truncated, empty, not an image);
    with `full`, every file that does not decode whole, as predict needs."""
    return [
        {"path": r.path, "reason": r.error}
        for r in check_files(paths, full=full, threads=threads)
        if r.error is not None
    ]


@dataclass
class CheckReport:
    data: str
    images: int = 0
    seconds: float = 0.0
    threads: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)

    def add(self, path: str, kind: str, reason: str) -> None:
        self.problems.append({"path": path, "kind": kind, "reason": reason})

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images / self.seconds, 1) if self.seconds else 0.0,
            "threads": self.threads,
            "ok": not self.problems,
            "problems": self.problems,
        }


def _kind(error: str) -> str:
    for words, kind in (
        ("truncated", "truncated"),
        ("0 bytes", "empty"),
        ("not a JPEG or PNG", "not-an-image"),
    ):
        if words in error:
            return kind
    return "undecodable"


def check_data(
    data: str | Path,
    *,
    threads: int | None = None,
    expected_size: tuple[int, int] | None = EXPECTED_SIZE,
    progress: bool = False,
) -> CheckReport:
    """Decode every train and eval image once; report every problem with its path."""
    from fastmask.data import Problems, build_index, eval_table
    from fastmask.errors import DataError
    from fastmask.loader import default_threads

    threads = threads or default_threads()
    report = CheckReport(str(data), threads=threads)
    try:
        index = build_index(data, corrections=None, lenient=True, warn=False)
        train_rows = index.frame[["path", "person"]]
        for p in index.skipped:
            report.add(p["path"], "layout", p["reason"])
    except DataError as err:  # no usable train images at all: still check eval
        report.add(str(data), "layout", str(err))
        train_rows = None
    eval_paths: list[str] = []
    if (Path(data) / "eval" / "info.csv").exists():
        problems = Problems(lenient=True, warn=False)
        table = eval_table(data, problems)
        for p in problems.items:
            report.add(p["path"], "eval-missing", p["reason"])
        eval_paths = [str(p) for p in table["path"] if p is not None]
    train_paths = [] if train_rows is None else [str(p) for p in train_rows["path"]]
    paths = train_paths + eval_paths
    start = time.perf_counter()
    results = check_files(paths, full=True, threads=threads, progress=progress)
    report.seconds = time.perf_counter() - start
    report.images = len(paths)
    for r in results:
        if r.error is not None:
            report.add(r.path, _kind(r.error), r.error)
        elif expected_size is not None and (r.width, r.height) != expected_size:
            turned = " (rotated?)" if (r.height, r.width) == expected_size else ""
            report.add(
                r.path,
                "size",
                f"image is {r.width}x{r.height}{turned}, expected "
                f"{expected_size[0]}x{expected_size[1]} (width x height, after EXIF orientation)",
            )
    if train_rows is not None:
        _report_duplicates(report, results[: len(train_paths)], list(train_rows["person"]))
    return report


def _report_duplicates(report: CheckReport, results: list[FileResult], people: list[str]) -> None:
    """Files with the same bytes in the folders of different people."""
    by_hash: dict[int, list[tuple[str, str]]] = {}
    for r, person in zip(results, people, strict=True):
        if r.error is None:
            by_hash.setdefault(r.hash, []).append((r.path, str(person)))
    for group in by_hash.values():
        if len({person for _, person in group}) < 2:
            continue
        for path, person in group:
            others = ", ".join(p for p, who in group if who != person)
            report.add(path, "duplicate", f"same content as {others} (a different person)")


def parse_size(text: str) -> tuple[int, int] | None:
    if text == "any":
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        w = h = 0
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(
            f"size {text!r}: expected WIDTHxHEIGHT (positive integers, e.g. 384x512) or any"
        )
    return (w, h)


def _run(args: argparse.Namespace) -> int:
    from fastmask.files import write_text_atomic

    report = check_data(args.data, threads=args.threads, expected_size=args.size, progress=True)
    for p in report.problems:
        print(f"{p['path']}: {p['kind']}: {p['reason']}")
    rate = report.images / report.seconds if report.seconds else 0.0
    verdict = f"{len(report.problems)} problem(s)" if report.problems else "no problems"
    print(
        f"{args.data}: {report.images} images decoded in {report.seconds:.1f} s "
        f"({rate:.0f} images/s on {report.threads} threads): {verdict}"
    )
    if args.json:
        import json

        write_text_atomic(args.json, json.dumps(report.to_json(), indent=2) + "\n")
    return 1 if report.problems else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="decode every image of a data set once and report every bad file (run it first)",
        description=(
            "Decode every train and eval image once, in parallel, and report each problem "
            "with its path: truncated, zero bytes, not an image, unexpected size, the same "
            "image in two people's folders, an info.csv row without a file, layout errors. "
            "Exit status 1 when there is any problem."
        ),
    )
    p.add_argument("data", help="data set folder (holding train/ and eval/)")
    p.add_argument(
        "--threads", type=non_negative_int, default=None, help="decode threads (0: all cores)"
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default=EXPECTED_SIZE,
        metavar="WxH",
        help="expected image size after EXIF orientation (default 384x512; any: no check)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON (check.json)")
    p.set_defaults(func=_run)
