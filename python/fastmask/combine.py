"""Predictions -> submission: `combine` task probabilities into the 18-class answer, `vote`
several submissions into one.

files -> data index -> native loader -> trainer -> predictions -> **combine** -> CSV

A prediction file (written by `fastmask predict`) is a CSV with `ImageID` and one
probability column per class of its task (`p0`, `p1`, ...), or for a `multi` run the
three tasks' columns prefixed (`mask_p0` ... `age_p2`). A submission is `ImageID,ans` with
ans = mask * 6 + gender * 3 + age, one row per row of eval/info.csv, in its order.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fastmask.data import (
    INFO_CSV_COLUMNS,
    NUM_CLASSES,
    TASKS,
    decode_classes,
    encode_class,
    read_csv_checked,
)
from fastmask.errors import DataError
from fastmask.files import write_csv_atomic
from fastmask.schema import MULTI

log = logging.getLogger(__name__)


def read_info_ids(info: str | Path) -> list[str]:
    """ImageIDs of eval/info.csv in order; duplicates refused."""
    table = read_csv_checked(Path(info), INFO_CSV_COLUMNS)
    ids = table["ImageID"].tolist()
    dup = table["ImageID"][table["ImageID"].duplicated()].tolist()
    if dup:
        raise DataError(f"{info}: ImageID {dup[0]} is listed more than once")
    return ids


def check_ids(
    path: str | Path, ids: Sequence[str], expected: Sequence[str], against: str | Path = "info.csv"
) -> None:
    """Refuse a file whose ImageIDs are empty, or miss, repeat or add any of `expected` (the
    ImageIDs of the file `against`)."""
    blank = [k for k, i in enumerate(ids) if not isinstance(i, str) or not i.strip()]
    if blank:
        raise DataError(f"{path}: row {blank[0] + 2} has an empty ImageID {ids[blank[0]]!r}")
    seen = pd.Series(list(ids))
    dup = seen[seen.duplicated()].tolist()
    if dup:
        raise DataError(f"{path}: ImageID {dup[0]} appears {int((seen == dup[0]).sum())} times")
    given, wanted = set(ids), set(expected)
    missing = [i for i in expected if i not in given]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} ImageID(s) of {against} have no prediction, e.g. {missing[0]}"
        )
    extra = [i for i in ids if i not in wanted]
    if extra:
        raise DataError(f"{path}: {len(extra)} ImageID(s) are not in {against}, e.g. {extra[0]}")


def read_probabilities(path: str | Path, task: str, prefix: str = "") -> pd.DataFrame:
    """Probabilities of one task from a prediction file: index ImageID, columns p0..pK-1."""
    if task not in TASKS:
        raise DataError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    try:
        table = pd.read_csv(path, dtype={"ImageID": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read prediction file {path}: {err}") from err
    if "ImageID" not in table.columns:
        raise DataError(f"{path}: no ImageID column (columns: {list(table.columns)})")
    pattern = f"{prefix}p"
    cols = [c for c in table.columns if c.startswith(pattern) and c[len(pattern) :].isdigit()]
    want = [f"{pattern}{i}" for i in range(NUM_CLASSES[task])]
    if sorted(cols, key=lambda c: int(c[len(pattern) :])) != want:
        raise DataError(
            f"{path}: {task} predictions need columns {', '.join(want)}; found "
            f"{', '.join(cols) or 'none'} ({task} has {NUM_CLASSES[task]} classes)"
        )
    probs = table[want].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(probs.to_numpy(dtype=float)).all(axis=1)
    if bad.any():
        raise DataError(
            f"{path}: row {int(np.argmax(bad)) + 2} has a missing or non-numeric probability"
        )
    check_recorded_task(path, MULTI if prefix else task)
    probs.columns = [f"p{i}" for i in range(NUM_CLASSES[task])]
    probs.index = table["ImageID"]
    return probs


def check_recorded_task(path: str | Path, task: str) -> None:
    """Refuse a prediction file whose `predict` record names another task than its place.

    Mask and age files have the same columns, so only the record tells a swap; a file
    without a readable record (written by hand, or by an older fastmask) is taken as given.
    """
    import json

    from fastmask.predict import record_path

    side = record_path(path)
    try:
        recorded = json.loads(side.read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return
    if recorded is not None and recorded != task:
        article = "an" if str(recorded)[:1] in "aeiou" else "a"
        raise DataError(
            f"{side} says {path} holds predictions of {article} {recorded} model; it was "
            f"passed as --{task}"
        )


def combine(
    info: str | Path,
    out: str | Path,
    *,
    mask: str | Path | None = None,
    gender: str | Path | None = None,
    age: str | Path | None = None,
    multi: str | Path | None = None,
    bias: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Write the submission from three task files or one multi file; returns it.

    `bias` (18 values, from `fastmask run` with tune_bias) is added to the 18-class
    log-probabilities before the argmax; without it each head's argmax is combined.
    """
    sources: dict[str, tuple[str | Path, str]] = {}
    if multi is not None:
        if any(p is not None for p in (mask, gender, age)):
            raise DataError("pass either --multi or --mask/--gender/--age, not both")
        sources = {task: (multi, f"{task}_") for task in TASKS}
    else:
        given = {"mask": mask, "gender": gender, "age": age}
        missing = [t for t, p in given.items() if p is None]
        if missing:
            raise DataError(f"missing prediction file(s) for {', '.join(missing)} (or use --multi)")
        sources = {task: (p, "") for task, p in given.items() if p is not None}
    ids = read_info_ids(info)
    probs = {}
    for task, (path, prefix) in sources.items():
        table = read_probabilities(path, task, prefix)
        check_ids(path, table.index.tolist(), ids)
        probs[task] = table.loc[ids].to_numpy()
    ans = answers(probs, bias)
    submission = pd.DataFrame({"ImageID": ids, "ans": ans.astype(int)})
    write_csv_atomic(submission, out)
    log.info("wrote %s (%d rows)", out, len(submission))
    return submission


def answers(probs: dict[str, np.ndarray], bias: Sequence[float] | None = None) -> np.ndarray:
    """18-class answers from each head's [N, k] probabilities, with optional class biases."""
    if bias is None:
        picks = {t: p.argmax(axis=1) for t, p in probs.items()}
        return np.asarray(encode_class(picks["mask"], picks["gender"], picks["age"]))
    from fastmask.bias import biased_answers, joint_log_probs

    values = np.asarray(bias, dtype=np.float64)
    if values.shape != (NUM_CLASSES["class"],):
        raise DataError(f"bias has {values.size} values; expected one per class (18)")
    if not np.isfinite(values).all():
        k = int(np.argmax(~np.isfinite(values)))
        raise DataError(f"bias of class {k} is {values[k]}; expected 18 finite numbers")
    return biased_answers(joint_log_probs(probs), values)


def read_bias(path: str | Path) -> list[float]:
    """The applied biases of a `fastmask run` bias.json (its "bias" list)."""
    import json

    try:
        raw = json.loads(Path(path).read_text())
        values = [float(v) for v in raw["bias"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: expected JSON with a list 'bias' of 18 numbers") from err
    if not np.isfinite(values).all():
        raise DataError(f"{path}: 'bias' holds {values}; expected 18 finite numbers")
    return values


def read_submission(path: str | Path) -> pd.DataFrame:
    """A submission `ImageID,ans` with ans in 0..17."""
    table = read_csv_checked(Path(path), INFO_CSV_COLUMNS)
    ans = pd.to_numeric(table["ans"], errors="coerce")
    bad = ans.isna() | (ans < 0) | (ans > 17) | (ans != ans.round())
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise DataError(f"{path}: row {row + 2} has ans {table['ans'][row]!r}, expected 0..17")
    return pd.DataFrame({"ImageID": table["ImageID"], "ans": ans.astype(int)})


def _majority(votes: np.ndarray, num_classes: int) -> np.ndarray:
    """Per row, the most voted label; a tie goes to the tied label voted by the earliest file."""
    counts = np.zeros((votes.shape[0], num_classes), dtype=np.int64)
    for j in range(votes.shape[1]):
        counts[np.arange(votes.shape[0]), votes[:, j]] += 1
    best = counts.max(axis=1)
    winner = np.empty(votes.shape[0], dtype=np.int64)
    for i in range(votes.shape[0]):
        tied = counts[i] == best[i]
        winner[i] = next(v for v in votes[i] if tied[v])
    return winner


def vote(paths: Sequence[str | Path], out: str | Path, *, by: str = "task") -> pd.DataFrame:
    """Hard vote of submissions, per task (then recombined) or on the 18 classes.

    Rows follow the first file; every file must hold the same ImageIDs. Ties go to the
    label chosen by the earliest file among those tied, so list the most trusted first.
    """
    if len(paths) < 2:
        raise DataError(f"vote needs at least two submissions, got {len(paths)}")
    if by not in ("task", "class"):
        raise DataError(f"--by {by!r}: expected task or class")
    first = read_submission(paths[0])
    ids = first["ImageID"].tolist()
    check_ids(paths[0], ids, ids, paths[0])
    columns = []
    for p in paths:
        sub = read_submission(p)
        check_ids(p, sub["ImageID"].tolist(), ids, paths[0])
        columns.append(sub.set_index("ImageID").loc[ids, "ans"].to_numpy())
    votes = np.stack(columns, axis=1)
    if by == "class":
        ans = _majority(votes, NUM_CLASSES["class"])
    else:
        m, g, a = decode_classes(votes)
        ans = _majority(m, 3) * 6 + _majority(g, 2) * 3 + _majority(a, 3)
    result = pd.DataFrame({"ImageID": ids, "ans": ans.astype(int)})
    write_csv_atomic(result, out)
    changed = int((result["ans"].to_numpy() != votes[:, 0]).sum())
    log.info("wrote %s: %d rows, %d differ from %s", out, len(result), changed, paths[0])
    return result


def _run_combine(args: argparse.Namespace) -> int:
    bias = read_bias(args.bias) if args.bias else None
    combine(
        args.info,
        args.out,
        mask=args.mask,
        gender=args.gender,
        age=args.age,
        multi=args.multi,
        bias=bias,
    )
    print(f"wrote {args.out}")
    return 0


def _run_vote(args: argparse.Namespace) -> int:
    vote(args.submissions, args.out, by=args.by)
    print(f"wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "combine",
        help="combine mask, gender and age predictions into the submission CSV",
        description="Write ImageID,ans (ans = mask*6 + gender*3 + age) in info.csv order.",
    )
    p.add_argument("--mask", help="prediction CSV of the mask task (ImageID,p0..p2)")
    p.add_argument("--gender", help="prediction CSV of the gender task (ImageID,p0,p1)")
    p.add_argument("--age", help="prediction CSV of the age task (ImageID,p0..p2)")
    p.add_argument("--multi", help="prediction CSV of a multi run (mask_p0 ... age_p2)")
    p.add_argument("--bias", help="bias.json of `fastmask run` (tune_bias): 18 class biases")
    p.add_argument("--info", required=True, help="eval/info.csv: which rows, in which order")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.set_defaults(func=_run_combine)
    v = sub.add_parser(
        "vote",
        help="hard vote of several submissions",
        description="Majority vote per task (mask, gender, age separately) or on the 18 "
        "classes; a tie goes to the earliest file's choice among the tied labels.",
    )
    v.add_argument("submissions", nargs="+", help="submission CSVs (ImageID,ans)")
    v.add_argument("--out", required=True)
    v.add_argument("--by", choices=["task", "class"], default="task")
    v.set_defaults(func=_run_vote)
