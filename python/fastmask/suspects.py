"""`python -m fastmask suspects RUN`: likely label errors, ranked from out-of-fold evidence.

A finished `fastmask run` job has out-of-fold (OOF) probabilities for every training image:
each from a model that never saw that image's person. Where such a model confidently
disagrees with the label, the label may be wrong. The ranking is confident learning
(Northcutt et al., as cleanlab's `find_label_issues`): per class j the threshold t_j is the
mean probability of j over the items labelled j; an item labelled i is a suspect when the
most probable of the classes reaching their own threshold (p_j >= t_j, i included) is some
j other than i, suggested as j and scored by the margin p_j - p_i.

- Mask labels belong to files (a person's mask1..5, incorrect_mask, normal): ranked per
  image. Two suspects of one person that each look like the other's label are reported as
  one swap (e.g. mask1 <-> normal).
- Gender and age belong to the person folder: the probabilities of a person's images are
  averaged and ranked per person.

Outputs in DIR: suspects.csv, contact sheets suspects_*.png (each suspect person's seven
images in a row with given and suggested labels), and corrections.csv in the format
`--corrections` reads, every suggestion commented out: uncomment what you accept.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastmask.argtypes import positive_int
from fastmask.data import STEM_TO_MASK, age_band, read_table
from fastmask.errors import FastmaskError
from fastmask.files import output_dir, write_csv_atomic, write_text_atomic
from fastmask.schema import (
    AGE_NAMES,
    DEFAULT_AGE_BOUNDS,
    GENDER_NAMES,
    MASK_NAMES,
    MULTI,
    prediction_columns,
)

log = logging.getLogger(__name__)

SUSPECT_COLUMNS = [
    "rank", "kind", "task", "person", "id", "path", "stem", "given", "suggested", "score",
    "correction",
]  # fmt: skip
STEM_ORDER = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")


def confident_suspects(probs: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confident learning: (suggested class or -1, score) per item.

    t_j = mean p_j over items labelled j (classes without items never reach a threshold);
    an item's guess is its most probable class among those reaching their own threshold,
    the given class i included (the confident joint of Northcutt et al.); it is a suspect when
    that guess j is not i, scored p_j - p_i (in (−1, 1]; higher is likelier wrong). An item
    whose given class reaches its threshold and beats every other confident class is not one.
    """
    n, k = probs.shape
    rows = np.arange(n)
    thresholds = np.full(k, np.inf)
    for j in range(k):
        if (given == j).any():
            thresholds[j] = probs[given == j, j].mean()
    masked = np.where(probs >= thresholds, probs, -np.inf)
    guess = masked.argmax(axis=1)
    # On a tie with the given class, the given class stays (no evidence against it).
    keeps = np.isfinite(masked[rows, given]) & (masked[rows, given] >= masked[rows, guess])
    has = np.isfinite(masked[rows, guess]) & (guess != given) & ~keeps
    score = probs[rows, guess] - probs[rows, given]
    return np.where(has, guess, -1), np.where(has, score, -np.inf)


def age_for_band(age: int, band: int, bounds: tuple[int, int] = DEFAULT_AGE_BOUNDS) -> int:
    """The age nearest `age` inside `band`: the smallest change that moves the label there."""
    lo, hi = bounds
    return {0: min(age, lo - 1), 1: min(max(age, lo), hi - 1), 2: max(age, hi)}[band]


@dataclass
class Job:
    """What suspects reads from a finished `fastmask run` folder."""

    folder: Path
    oof: pd.DataFrame
    summary: dict[str, Any]
    # recipe.json's every setting, e.g. "multi.corrections": read once.
    effective: dict[str, Any]

    @classmethod
    def read(cls, folder: str | Path) -> Job:
        folder = Path(folder)
        summary_path, oof_path = folder / "summary.json", folder / "oof.csv"
        if not summary_path.exists() or not oof_path.exists():
            raise FastmaskError(
                f"{folder}: no summary.json and oof.csv of a finished `fastmask run`; run the "
                "job to the end first"
            )
        summary = _read_json(summary_path)
        if summary.get("validation") != "out-of-fold":
            raise FastmaskError(
                f"{folder} was trained on a single split: only its validation people have "
                "out-of-fold predictions. Run with folds (e.g. --set folds=5) to check every label"
            )
        effective = _read_json(folder / "recipe.json").get("effective", {})
        oof = read_table(oof_path, OOF_COLUMNS, numbers=OOF_COLUMNS[2:])
        oof["person"] = oof["person"].astype(str)
        return cls(folder, oof, summary, effective)


# What the ranking reads of oof.csv: the labels and every head's OOF probabilities.
OOF_COLUMNS = (
    "path", "person", "mask", "gender", "age_band",
    *(c for columns in prediction_columns(MULTI).values() for c in columns),
)  # fmt: skip


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FastmaskError(f"cannot read {path} of the job: {err}") from err
    if not isinstance(value, dict):
        raise FastmaskError(f"{path}: expected a JSON object, as `fastmask run` writes it")
    return value


def check_data(job: Job) -> list[str]:
    """Warnings when the data no longer matches what the job was trained on."""
    from fastmask.train.config import TrainConfig
    from fastmask.train.splits import data_fingerprint, load_frame

    data = str(job.summary.get("data", ""))
    task = job.summary.get("tasks", ["mask"])[0]
    settings = {k.split(".", 1)[1]: v for k, v in job.effective.items() if k.startswith(f"{task}.")}
    try:
        frame = load_frame(TrainConfig.from_json({**settings, "task": task, "data": data}))
    except (FastmaskError, OSError) as err:
        return [f"cannot read the job's data {data} to compare with ({err})"]
    fold_path = job.folder / task / "fold0" / "summary.json"
    try:
        fold = json.loads(fold_path.read_text())
    except (OSError, ValueError) as err:
        return [f"cannot read {fold_path} to compare the data with what the job trained on ({err})"]
    if not isinstance(fold, dict):
        return [f"{fold_path} is not a JSON object: the data was not compared with the job's"]
    if fold.get("data_fingerprint") == data_fingerprint(frame):
        return []

    # Keyed by person folder and file name, so a moved data folder still compares.
    def keyed(table: pd.DataFrame) -> pd.DataFrame:
        names = table["path"].map(lambda p: Path(str(p)).name)
        return table.set_index(table["person"].astype(str) + "/" + names)

    now, was = keyed(frame), keyed(job.oof)
    added, removed = now.index.difference(was.index), was.index.difference(now.index)
    common = was.index.intersection(now.index)
    changed = int((now.loc[common, "cls"] != was.loc[common, "cls"]).sum())
    what = []
    if len(added) or len(removed):
        what.append(f"{len(added)} images added and {len(removed)} removed")
    if changed:
        what.append(f"{changed} images relabelled (corrections applied since?)")
    return [
        f"the data {data} changed after the job trained ({'; '.join(what) or 'labels or names'}):"
        " the suspects are of the data as it was"
    ]


def mask_suspects(oof: pd.DataFrame) -> pd.DataFrame:
    """Per image: the mask label, from the mask head's OOF probabilities."""
    probs = oof[[f"mask_p{k}" for k in range(3)]].to_numpy(dtype=np.float64)
    given = oof["mask"].to_numpy(dtype=np.int64)
    suggested, score = confident_suspects(probs, given)
    rows = oof.assign(suggested=suggested, score=score, stem=oof["path"].map(_stem))
    rows = rows[rows["suggested"] >= 0]
    out = []
    used: set[str] = set()
    for person, group in rows.groupby("person", sort=False):
        items = list(group.itertuples(index=False))
        for a in items:
            if a.path in used:
                continue
            # A swap: another suspect file of the person that looks like this one's label.
            # `swap:A:B` gives A the label of stem B and B that of stem A, so it only fits
            # files that carry their own stems' labels; where a correction (the shipped
            # swap_incorrect_normal) already moved them, each file gets its own `set:`.
            partner = next(
                (b for b in items if b.path != a.path and b.path not in used
                 and b.suggested == a.mask and a.suggested == b.mask
                 and STEM_TO_MASK.get(a.stem) == a.mask and STEM_TO_MASK.get(b.stem) == b.mask),
                None,
            )  # fmt: skip
            if partner is not None:
                used.update((a.path, partner.path))
                first, second = sorted((a, partner), key=lambda r: STEM_ORDER.index(r.stem))
                out.append(
                    {
                        "kind": "swap",
                        "task": "mask",
                        "person": person,
                        "path": f"{first.path} <-> {second.path}",
                        "stem": f"{first.stem}<->{second.stem}",
                        "given": f"{MASK_NAMES[first.mask]}/{MASK_NAMES[second.mask]}",
                        "suggested": f"{MASK_NAMES[second.mask]}/{MASK_NAMES[first.mask]}",
                        "score": float((a.score + partner.score) / 2),
                        "correction": f"swap:{first.stem}:{second.stem}",
                    }
                )
                continue
            used.add(a.path)
            out.append(
                {
                    "kind": "image",
                    "task": "mask",
                    "person": person,
                    "path": a.path,
                    "stem": a.stem,
                    "given": MASK_NAMES[a.mask],
                    "suggested": MASK_NAMES[a.suggested],
                    "score": float(a.score),
                    "correction": f"set:{a.stem}:{MASK_NAMES[a.suggested]}",
                }
            )
    return pd.DataFrame(out)


def person_suspects(oof: pd.DataFrame, task: str) -> pd.DataFrame:
    """Per person: gender or age band, the person's images' probabilities averaged."""
    k = {"gender": 2, "age": 3}[task]
    column = {"gender": "gender", "age": "age_band"}[task]
    cols = [f"{task}_p{j}" for j in range(k)]
    people = oof.groupby("person", sort=False).agg(
        {**{c: "mean" for c in cols}, column: "first", "path": "first"}
    )
    given = people[column].to_numpy(dtype=np.int64)
    suggested, score = confident_suspects(people[cols].to_numpy(dtype=np.float64), given)
    out = []
    for (person, row), sug, sc in zip(people.iterrows(), suggested, score, strict=True):
        if sug < 0:
            continue
        g = int(row[column])
        if task == "gender":
            given_name, suggested_name = GENDER_NAMES[g], GENDER_NAMES[sug]
            value = suggested_name
        else:
            age = _folder_age(str(person))
            given_name = AGE_NAMES[g]
            if age is not None:
                # oof.csv holds the band trained with; a correction may have moved the age.
                moved = int(age_band(age)) != g
                given_name += f" (corrected from {age})" if moved else f" ({age})"
            target = age_for_band(age, int(sug)) if age is not None else None
            suggested_name = AGE_NAMES[sug] + (f" ({target})" if target is not None else "")
            value = str(target) if target is not None else ""
        out.append(
            {
                "kind": "person",
                "task": task,
                "person": person,
                "path": str(Path(str(row["path"])).parent),
                "stem": "",
                "given": given_name,
                "suggested": suggested_name,
                "score": float(sc),
                "correction": value,
            }
        )
    return pd.DataFrame(out)


def _stem(path: str) -> str:
    return Path(path).stem.lower()


def _folder_age(person: str) -> int | None:
    try:
        return int(person.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return None


def person_id(person: str) -> str:
    """The id a corrections row names: the folder name's first field (000123 or 001498-1)."""
    return person.split("_", 1)[0]


def find_suspects(oof: pd.DataFrame) -> pd.DataFrame:
    """Every suspect of the three tasks, most suspicious first, with a rank."""
    parts = [mask_suspects(oof), person_suspects(oof, "gender"), person_suspects(oof, "age")]
    table = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    if table.empty:
        return pd.DataFrame(columns=SUSPECT_COLUMNS)
    table["id"] = table["person"].map(person_id)
    table = table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table["score"] = table["score"].round(4)
    return table[SUSPECT_COLUMNS]


def corrections_text(
    table: pd.DataFrame,
    kept: list[str] | None = None,
    reviewed: list[str] | None = None,
    turned_off: set[tuple[str, ...]] | None = None,
) -> str:
    """corrections.csv for `--corrections`: the corrections the job already used (`kept`,
    CSV rows without the header; commented out where their (id, field, value) is in
    `turned_off`, as a reviewer left them), those accepted in an earlier review of the file
    (`reviewed`), then one commented-out line per suspect not accepted yet."""
    lines = [
        "# Suggested label corrections from `fastmask suspects`, most suspicious first.",
        "# Every suggestion is commented out: look at the contact sheets, then remove the '# '",
        "# of each correction you accept and train with --corrections THIS_FILE.",
        "# A person's corrections apply to every folder with that id.",
        "id,field,value,status,note",
    ]
    if kept:
        off = turned_off or set()
        lines += ["# The corrections the job was trained with, kept:"]
        lines += [f"# {line}" if _correction_key(line) in off else line for line in kept]
    if reviewed:
        lines += ["# Accepted in an earlier review of this file, kept:", *reviewed]
    if kept or reviewed:
        lines.append("# Suggestions:")
    accepted = {_correction_key(line) for line in [*(kept or []), *(reviewed or [])]}
    for row in table.itertuples(index=False):
        if not row.correction or (str(row.id), row.task, row.correction) in accepted:
            continue
        note = f"rank {row.rank} score {row.score:.3f}: {row.given} -> {row.suggested}"
        lines.append(f"# {row.id},{row.task},{row.correction},default,{note.replace(',', ';')}")
    return "\n".join(lines) + "\n"


def _correction_key(line: str) -> tuple[str, ...]:
    """(id, field, value) of a corrections.csv row."""
    return tuple(next(csv.reader([line]), [])[:3])


def earlier_review(path: Path, kept: list[str]) -> tuple[list[str], set[tuple[str, ...]]]:
    """What a reviewer did in an existing corrections.csv, which a new ranking must keep:
    the corrections accepted there that are not among `kept` (its rows, read as
    `--corrections` reads them), and the (id, field, value) of the `kept` ones commented
    out (and not left active elsewhere in it). A file that cannot be read is an error naming
    it, not overwritten."""
    from fastmask.data import read_corrections_csv

    if not path.exists():
        return [], set()
    known = {_correction_key(line) for line in kept}
    rows = correction_rows(read_corrections_csv(path))
    reviewed = [line for line in rows if _correction_key(line) not in known]
    commented = {
        _correction_key(line.lstrip().lstrip("#").strip())
        for line in path.read_text().splitlines()
        if line.lstrip().startswith("#")
    }
    turned_off = (commented & known) - {_correction_key(line) for line in rows}
    return reviewed, turned_off


def correction_rows(table: pd.DataFrame) -> list[str]:
    """A corrections table as CSV rows of five columns (commas in notes made ';')."""
    status = table["status"] if "status" in table else pd.Series(["default"] * len(table))
    notes = table["note"] if "note" in table else pd.Series([""] * len(table))
    return [
        f"{r.id},{r.field},{r.value},{s},{str(n).replace(',', ';')}"
        for r, s, n in zip(table.itertuples(index=False), status, notes, strict=True)
    ]


def used_corrections(job: Job) -> list[str]:
    """The rows of the corrections file the job trained with (the shipped ones by default),
    five columns each, so a reviewed file keeps them; disputed rows keep their status (they
    apply only with --disputed), so the file can replace the one the job trained with."""
    from fastmask.data import load_corrections

    task = job.summary.get("tasks", ["mask"])[0]
    source = job.effective.get(f"{task}.corrections", "default")
    if source == "none":
        return []
    return correction_rows(load_corrections(source, disputed=True))


def contact_sheets(
    table: pd.DataFrame, oof: pd.DataFrame, out: Path, per_sheet: int = 10
) -> list[Path]:
    """suspects_NN.png: per suspect person one row of their images, labels given / suggested."""
    from fastmask.plots import pyplot, save_figure, upright_thumbnail

    plt = pyplot()
    people: list[str] = list(dict.fromkeys(table["person"]))
    by_person = {p: g for p, g in oof.groupby("person", sort=False)}
    written = []
    for sheet, start in enumerate(range(0, len(people), per_sheet), 1):
        chunk = people[start : start + per_sheet]
        fig, axes = plt.subplots(
            len(chunk), 7, figsize=(7 * 1.55, len(chunk) * 2.35), squeeze=False
        )
        for r, person in enumerate(chunk):
            rows = by_person[person].assign(stem=lambda d: d["path"].map(_stem))
            rows = rows.sort_values("stem", key=lambda s: s.map(_stem_rank))
            mine = table[table["person"] == person]
            flagged_stems = {s for st in mine["stem"] for s in str(st).split("<->") if s}
            notes = [
                f"#{t.rank} {t.task}: {t.given} -> {t.suggested}"
                for t in mine.itertuples(index=False)
            ]
            for c in range(7):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(rows):
                    ax.axis("off")
                    continue
                item = rows.iloc[c]
                try:
                    ax.imshow(upright_thumbnail(item["path"], (144, 192)))
                except OSError:
                    ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
                flagged = item["stem"] in flagged_stems
                p = [item[f"mask_p{k}"] for k in range(3)]
                ax.set_title(
                    f"{item['stem']}\n{MASK_NAMES[int(item['mask'])]} "
                    f"(p {p[int(item['mask'])]:.2f})",
                    fontsize=7,
                    color="tab:red" if flagged else "black",
                )
                for spine in ax.spines.values():
                    spine.set_color("tab:red" if flagged else "0.8")
                    spine.set_linewidth(2.5 if flagged else 0.5)
            axes[r, 0].set_ylabel(
                f"{person}\n" + "\n".join(notes[:3]), fontsize=7, rotation=0, ha="right",
                va="center", labelpad=6,
            )  # fmt: skip
        fig.suptitle(
            f"label suspects {start + 1}-{start + len(chunk)} of {len(people)} people "
            "(red: the files in question)",
            fontsize=9,
        )
        fig.tight_layout()
        written.append(save_figure(fig, out / f"suspects_{sheet:02d}.png"))
        plt.close(fig)
    return written


def _stem_rank(stem: str) -> int:
    return STEM_ORDER.index(stem) if stem in STEM_ORDER else len(STEM_ORDER)


def write_suspects(
    run: str | Path, out: str | Path | None = None, top: int = 50
) -> tuple[pd.DataFrame, list[str]]:
    """Rank the job's label suspects; write suspects.csv, sheets and corrections.csv."""
    job = Job.read(run)
    warnings = check_data(job)
    for w in warnings:
        log.warning("%s", w)
    folder = Path(out) if out is not None else job.folder / "suspects"
    output_dir(folder)
    table = find_suspects(job.oof).head(top)
    kept = used_corrections(job)
    reviewed, turned_off = earlier_review(folder / "corrections.csv", kept)
    if turned_off:
        log.info(
            "keeping %d trained-with corrections commented out in %s",
            len(turned_off),
            folder / "corrections.csv",
        )
    if reviewed:
        log.info("keeping %d corrections accepted in %s", len(reviewed), folder / "corrections.csv")
    write_csv_atomic(table, folder / "suspects.csv")
    text = corrections_text(table, kept, reviewed, turned_off)
    write_text_atomic(folder / "corrections.csv", text)
    # Only now that the new ranking is written: the old sheets show the old one.
    for old in folder.glob("suspects_*.png"):
        old.unlink()
    sheets = contact_sheets(table, job.oof, folder) if not table.empty else []
    log.info("%d suspects -> %s (%d contact sheets)", len(table), folder, len(sheets))
    return table, warnings


def run_command(args: argparse.Namespace) -> int:
    table, _ = write_suspects(args.run, args.out, args.top)
    folder = Path(args.out) if args.out else Path(args.run) / "suspects"
    if table.empty:
        print("no label suspects: every OOF prediction agrees with its label")
        return 0
    shown = table.head(15)
    for row in shown.itertuples(index=False):
        print(
            f"{row.rank:3d}  {row.score:6.3f}  {row.task:6s}  {row.person}  "
            f"{row.stem or '(person)'}: {row.given} -> {row.suggested}"
        )
    if len(table) > len(shown):
        print(f"... {len(table) - len(shown)} more in {folder / 'suspects.csv'}")
    print(f"review {folder}/suspects_*.png, then uncomment accepted lines of "
          f"{folder / 'corrections.csv'} and train with --corrections")  # fmt: skip
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "suspects",
        help="rank likely label errors from a finished run's out-of-fold predictions",
        description="Confident learning on the out-of-fold probabilities of `fastmask run`: "
        "mask labels per image (swaps found as pairs), gender and age per person. Writes "
        "suspects.csv, contact sheets and a commented-out corrections.csv.",
    )
    p.add_argument("run", metavar="RUN", help="folder of a finished `fastmask run` (with folds)")
    p.add_argument("--top", type=positive_int, default=50, help="how many suspects to keep (50)")
    p.add_argument("--out", help="output folder (default RUN/suspects)")
    p.set_defaults(func=run_command)
