"""`python -m fastmask eda DATA --out DIR`: what is in the training set, as numbers and plots.

files -> **data index** (read here, not changed) -> summary.json + PNG plots

Writes into DIR (created if needed; every file goes through a temp name and os.replace):

- `summary.json`: `people`, `images`, `classes` (18), `mask` (3), `gender` (2), `age` (3)
  are counts of IMAGES (7 per person); `people_gender` (2), `people_age` (3),
  `people_gender_age` (2 x 3, rows male/female) and `ages` (age as a string -> people of
  that age) count PEOPLE. Also `extensions` (lower-case
  extension -> images), `skipped` (items dropped with --lenient: `{path, reason}`),
  `corrections_applied` (people whose labels a correction touched), `age_bounds` and
  `eval_images` (images listed in eval/info.csv and found; null when there is no eval set).
- `counts.png`: images per mask, gender and age band.
- `classes.png`: images per class 0..17, coloured by mask.
- `age_hist.png`: people per age 18..60 (wider when a correction set an age outside it)
  with the age band boundaries.
- `gender_age.png`: people per gender x age band.
- `samples.png`: a few random images of every class, one row per class, distinct people first.

Labels are the ones training sees: corrections applied (unless `--corrections none`) and
age bands from `--age-bounds`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastmask import data as D
from fastmask.argtypes import positive_int
from fastmask.files import output_dir, write_text_atomic
from fastmask.plots import DPI, pyplot, save_figure, upright_thumbnail

log = logging.getLogger(__name__)

PLOT_FILES = ("counts.png", "classes.png", "age_hist.png", "gender_age.png", "samples.png")
MASK_COLOURS = ("tab:blue", "tab:orange", "tab:red")
GENDER_COLOURS = ("tab:cyan", "tab:pink")
AGE_COLOURS = ("tab:green", "tab:olive", "tab:purple")
THUMB_SIZE = (96, 128)  # width, height: the 384x512 photos at a quarter


def band_names(bounds: Sequence[int]) -> list[str]:
    """Age band names for these boundaries, e.g. ['<30', '30-59', '>=60']."""
    lo, hi = D.check_age_bounds(bounds)
    middle = f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}"
    return [f"<{lo}", middle, f">={hi}"]


def class_labels(bounds: Sequence[int]) -> list[str]:
    """The 18 class names with the age bands of `bounds` (D.class_names() at 30/60)."""
    bands = band_names(bounds)
    return [
        f"{D.MASK_NAMES[m]}/{D.GENDER_NAMES[g]}/{bands[a]}"
        for m, g, a in map(D.decode_class, range(D.NUM_CLASSES["class"]))
    ]


def _count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image', '2,765 images': plot text reads right for tiny data sets too."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def _counts(values: pd.Series, n: int) -> list[int]:
    return [int(c) for c in np.bincount(values.to_numpy(dtype=np.int64), minlength=n)[:n]]


def summarise(index: D.DataIndex, eval_images: int | None) -> dict[str, Any]:
    """The summary.json content: plain Python ints, lists and dicts only."""
    f = index.frame
    people = index.people
    ext_counts = f["ext"].value_counts()
    ages = people["age"].value_counts().sort_index()
    return {
        "people": int(len(people)),
        "images": int(len(f)),
        "classes": _counts(f["cls"], D.NUM_CLASSES["class"]),
        "mask": _counts(f["mask"], 3),
        "gender": _counts(f["gender"], 2),
        "age": _counts(f["age_band"], 3),
        "extensions": {str(e): int(n) for e, n in ext_counts.items()},
        "skipped": [dict(item) for item in index.skipped],
        "corrections_applied": int(index.corrections_applied),
        "people_gender": _counts(people["gender"], 2),
        "people_age": _counts(people["age_band"], 3),
        "people_gender_age": [
            _counts(people.loc[people["gender"] == g, "age_band"], 3) for g in range(2)
        ],
        "age_bounds": [int(b) for b in index.age_bounds],
        "eval_images": eval_images,
        # JSON object keys are strings; keep the returned dict identical to the file.
        "ages": {str(int(a)): int(n) for a, n in ages.items()},
    }


def summary_json(summary: dict[str, Any]) -> str:
    """JSON with one key per line: count lists stay on one line, skipped items one per line."""
    parts = []
    for key, value in summary.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            body = "[\n" + ",\n".join(f"    {json.dumps(v)}" for v in value) + "\n  ]"
        else:
            body = json.dumps(value)
        parts.append(f"  {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _eval_image_count(index: D.DataIndex, lenient: bool) -> int | None:
    """Images of DATA/eval that info.csv lists and that exist; None without an eval set."""
    data_root = index.root.parent
    if not (data_root / "eval" / "info.csv").exists():
        log.info("no eval set beside %s; eval stats skipped", index.root)
        return None
    return int(len(D.read_eval(data_root, lenient=lenient)))


# ---------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------


def _bar_with_counts(ax: Any, names: Sequence[str], counts: Sequence[int], colours: Any) -> None:
    total = max(sum(counts), 1)
    x = np.arange(len(counts))
    bars = ax.bar(x, counts, color=colours, edgecolor="black", linewidth=0.5)
    ax.bar_label(bars, labels=[f"{c:,}\n({c / total:.0%})" for c in counts], padding=2, fontsize=9)
    ax.set_xticks(x, names)
    # Headroom so the two-line labels above the tallest bar stay inside the axes.
    ax.set_ylim(0, max(max(counts), 1) * 1.22)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def plot_counts(summary: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    bands = band_names(summary["age_bounds"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    panels = [
        ("mask", D.MASK_NAMES, MASK_COLOURS),
        ("gender", D.GENDER_NAMES, GENDER_COLOURS),
        ("age band", bands, AGE_COLOURS),
    ]
    for ax, (title, names, colours), counts in zip(
        axes, panels, (summary["mask"], summary["gender"], summary["age"]), strict=True
    ):
        _bar_with_counts(ax, names, counts, colours)
        ax.set_title(f"Images per {title}")
        ax.set_xlabel(title)
        ax.set_ylabel("images")
    fig.suptitle(f"{summary['images']:,} images of {summary['people']:,} people")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_classes(summary: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    from matplotlib.patches import Patch

    counts = summary["classes"]
    labels = [f"{c}: {name}" for c, name in enumerate(class_labels(summary["age_bounds"]))]
    colours = [MASK_COLOURS[D.decode_class(c)[0]] for c in range(D.NUM_CLASSES["class"])]
    fig, ax = plt.subplots(figsize=(12, 6))
    x = np.arange(D.NUM_CLASSES["class"])
    bars = ax.bar(x, counts, color=colours, edgecolor="black", linewidth=0.5)
    ax.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=2, fontsize=8)
    ax.set_xticks(x, labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_ylim(0, max(max(counts), 1) * 1.1)
    ax.set_xlim(-0.6, 17.6)
    ax.set_xlabel("class (mask/gender/age band)")
    ax.set_ylabel("images")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    smallest = int(np.argmin(counts))
    ax.set_title(
        f"Images per class ({summary['images']:,} images; smallest: class {smallest}, "
        f"{_count(counts[smallest], 'image')})"
    )
    ax.legend(
        handles=[Patch(color=c, label=n) for c, n in zip(MASK_COLOURS, D.MASK_NAMES, strict=True)],
        title="mask",
        loc="upper right",
    )
    fig.tight_layout()
    return save_figure(fig, path)


def plot_age_hist(summary: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    lo, hi = summary["age_bounds"]
    bands = band_names(summary["age_bounds"])
    # 18..60 as the data writes ages, widened to any age a correction set (1..120).
    seen = [int(a) for a in summary["ages"]]
    first, last = min([D.AGE_RANGE[0], *seen]), max([D.AGE_RANGE[1], *seen])
    ages = np.arange(first, last + 1)
    people = np.array([summary["ages"].get(str(a), 0) for a in ages])
    band = D.age_band(ages, (lo, hi))
    fig, ax = plt.subplots(figsize=(12, 4.8))
    for b in range(3):
        sel = band == b
        ax.bar(
            ages[sel],
            people[sel],
            width=0.85,
            color=AGE_COLOURS[b],
            edgecolor="black",
            linewidth=0.4,
            label=f"{bands[b]}: {summary['people_age'][b]:,} people",
        )
    top = max(int(people.max()), 1) * 1.18
    ax.set_ylim(0, top)
    # A boundary outside 18..60 has no line to draw (its band is just empty).
    for boundary in (b for b in (lo, hi) if first < b <= last):
        # Between the last age of one band and the first of the next.
        ax.axvline(boundary - 0.5, color="black", linestyle="--", linewidth=1)
        ax.text(
            boundary - 0.6,
            top * 0.98,
            f"{boundary}",
            ha="right",
            va="top",
            fontsize=9,
            fontweight="bold",
        )
    ax.set_xlim(first - 1, last + 1)
    ax.set_xticks(np.arange(-(-first // 5) * 5, last + 1, 5))
    ax.set_xticks(ages, minor=True)
    ax.set_xlabel(f"age ({D.AGE_RANGE[0]} includes younger people, {D.AGE_RANGE[1]} older ones)")
    ax.set_ylabel("people")
    ax.set_title(f"People per age ({summary['people']:,} people; dashed: age band boundaries)")
    # Outside the axes: any spot inside can hide bars of some age distribution.
    ax.legend(title="age band", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_gender_age(summary: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    table = np.array(summary["people_gender_age"], dtype=np.int64)
    total = max(int(table.sum()), 1)
    bands = band_names(summary["age_bounds"])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    im = ax.imshow(table, cmap="Blues", vmin=0, vmax=max(int(table.max()), 1))
    for g in range(2):
        for a in range(3):
            n = int(table[g, a])
            # Dark cells get white text so the count stays readable.
            colour = "white" if n > table.max() * 0.55 else "black"
            ax.text(a, g, f"{n:,}\n({n / total:.0%})", ha="center", va="center", color=colour)
    ax.set_xticks(range(3), [f"{b}\n({n:,})" for b, n in zip(bands, table.sum(0), strict=True)])
    ax.set_yticks(
        range(2), [f"{name}\n({n:,})" for name, n in zip(D.GENDER_NAMES, table.sum(1), strict=True)]
    )
    ax.set_xlabel("age band (people)")
    ax.set_ylabel("gender (people)")
    ax.set_title(f"People per gender x age band ({total:,} people)")
    fig.colorbar(im, ax=ax, label="people", shrink=0.8)
    fig.tight_layout()
    return save_figure(fig, path)


def pick_samples(frame: pd.DataFrame, per_class: int, seed: int) -> dict[int, pd.DataFrame]:
    """Up to `per_class` random rows of every class, from distinct people where possible."""
    rng = np.random.default_rng(seed)
    picked: dict[int, pd.DataFrame] = {}
    for c in range(D.NUM_CLASSES["class"]):
        rows = frame[frame["cls"] == c].sort_values("path")
        rows = rows.iloc[rng.permutation(len(rows))]
        # A person's first (random) image ranks 0, the second 1, ...: people before repeats.
        rank = rows.groupby("person").cumcount().to_numpy()
        picked[c] = rows.iloc[np.argsort(rank, kind="stable")[:per_class]]
    return picked


def load_thumbnail(path: str | Path, size: tuple[int, int] = THUMB_SIZE) -> np.ndarray | None:
    """An RGB thumbnail fitting `size`, upright per EXIF; None when the file cannot be read."""
    try:
        return upright_thumbnail(path, size)
    except OSError as err:
        log.warning("cannot read %s for samples.png: %s", path, err)
        return None


def plot_samples(
    index: D.DataIndex, path: Path, per_class: int, seed: int
) -> tuple[Path, list[str]]:
    """The sample grid; also returns the paths shown, in row-major order."""
    plt = pyplot()
    picked = pick_samples(index.frame, per_class, seed)
    labels = class_labels(index.age_bounds)
    n = D.NUM_CLASSES["class"]
    totals = np.bincount(index.frame["cls"].to_numpy(dtype=np.int64), minlength=n)
    # Layout in inches: at DPI 100 a thumbnail cell is drawn pixel for pixel, never resampled.
    thumb_w, thumb_h = THUMB_SIZE[0] / DPI, THUMB_SIZE[1] / DPI
    gap_w, gap_h = 0.12, 0.24  # gap_h leaves room for the id/age caption
    left, right, top, bottom = 2.4, 0.15, 0.65, 0.3
    width = left + per_class * thumb_w + (per_class - 1) * gap_w + right
    height = top + n * thumb_h + (n - 1) * gap_h + bottom
    fig, axes = plt.subplots(
        n,
        per_class,
        figsize=(width, height),
        squeeze=False,
        gridspec_kw={
            "left": left / width,
            "right": 1 - right / width,
            "top": 1 - top / height,
            "bottom": bottom / height,
            "wspace": gap_w / thumb_w,
            "hspace": gap_h / thumb_h,
        },
    )
    shown: list[str] = []
    for c in range(n):
        rows = picked[c]
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(rows):
                row = rows.iloc[j]
                thumb = load_thumbnail(row["path"])
                if thumb is None:
                    ax.text(0.5, 0.5, "unreadable", ha="center", va="center", color="red")
                else:
                    ax.imshow(thumb)
                shown.append(str(row["path"]))
                # id and age under each image, to look up suspicious labels quickly.
                ax.set_xlabel(f"{row['id']}, age {row['age']}", fontsize=7, labelpad=2)
            elif j == 0:
                ax.text(0.5, 0.5, "no images", ha="center", va="center", color="grey")
        axes[c, 0].set_ylabel(
            f"{c}: {labels[c]}\n{_count(int(totals[c]), 'image')}",
            rotation=0,
            ha="right",
            va="center",
            fontsize=9,
            labelpad=8,
        )
    # Two short lines so the title fits even a one-column grid.
    fig.suptitle(
        f"Random images per class\n(up to {per_class}, distinct people first; seed {seed})",
        y=1 - 0.08 / height,
        va="top",
        fontsize=11,
    )
    return save_figure(fig, path), shown


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------


def analyse(
    data: str | Path,
    out: str | Path,
    *,
    age_bounds: Sequence[int] = D.DEFAULT_AGE_BOUNDS,
    corrections: str | Path | None = "default",
    disputed: bool = False,
    exclude_corrected: bool = False,
    lenient: bool = False,
    samples_per_class: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Index `data`, write summary.json and the plots into `out`; return the summary.

    Raises DataError (from the data index) when `data` is not a usable data set.
    """
    if samples_per_class < 1:
        raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
    index = D.build_index(
        data,
        age_bounds=age_bounds,
        corrections=corrections,
        disputed=disputed,
        exclude_corrected=exclude_corrected,
        lenient=lenient,
    )
    summary = summarise(index, _eval_image_count(index, lenient))
    out_dir = output_dir(out)
    written = [write_text_atomic(out_dir / "summary.json", summary_json(summary))]
    written.append(plot_counts(summary, out_dir / "counts.png"))
    written.append(plot_classes(summary, out_dir / "classes.png"))
    written.append(plot_age_hist(summary, out_dir / "age_hist.png"))
    written.append(plot_gender_age(summary, out_dir / "gender_age.png"))
    written.append(plot_samples(index, out_dir / "samples.png", samples_per_class, seed)[0])
    for p in written:
        log.info("wrote %s", p)
    smallest = int(np.argmin(summary["classes"]))
    log.info(
        "%s, %s, %d skipped; smallest class %d (%s)",
        _count(summary["people"], "person", "people"),
        _count(summary["images"], "image"),
        len(summary["skipped"]),
        smallest,
        _count(summary["classes"][smallest], "image"),
    )
    return summary


def register(sub: Any) -> None:
    """Add the `eda` command to the CLI's subparsers."""
    p = sub.add_parser(
        "eda",
        help="summarise the training set: counts, plots and sample images",
        description=(
            "Index DATA (as training would) and write summary.json, counts.png, classes.png, "
            "age_hist.png, gender_age.png and samples.png into --out."
        ),
    )
    p.add_argument("data", metavar="DATA", help="data folder holding train/ (and eval/)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the summary and plots")
    p.add_argument(
        "--age-bounds",
        nargs=2,
        type=int,
        default=list(D.DEFAULT_AGE_BOUNDS),
        metavar=("LOW", "HIGH"),
        help="age band boundaries (default: 30 60)",
    )
    p.add_argument(
        "--corrections",
        default="default",
        metavar="PATH|none",
        help="label corrections CSV, 'default' (shipped with fastmask) or 'none'",
    )
    p.add_argument("--disputed", action="store_true", help="also apply disputed corrections")
    p.add_argument(
        "--exclude-corrected",
        action="store_true",
        help="drop the people a correction names instead of fixing them",
    )
    p.add_argument("--lenient", action="store_true", help="skip broken items with a warning")
    p.add_argument(
        "--samples",
        type=positive_int,
        default=4,
        metavar="N",
        help="random images per class in samples.png (default: 4)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sample choice (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    analyse(
        args.data,
        args.out,
        age_bounds=args.age_bounds,
        corrections=args.corrections,
        disputed=args.disputed,
        exclude_corrected=args.exclude_corrected,
        lenient=args.lenient,
        samples_per_class=args.samples,
        seed=args.seed,
    )
    return 0
