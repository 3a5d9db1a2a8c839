"""The data index: reads the competition layout (see DATASET.md) into one pandas table.

files -> **data index** -> native loader -> trainer -> predictions -> combine -> CSV

The index has one row per training image with columns
`path, person, id, gender, age, age_band, mask, cls, ext, stem`. The scan (the slow part:
listing ~19k files and checking their magic bytes) is cached beside the data, keyed by a
fingerprint of names, sizes and mtimes; labels, corrections and bands are applied on top
of the cached scan, so changing an option never needs a rescan.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastmask.errors import DataError

# The label schema lives in fastmask.schema; re-exported here, where the index applies it.
from fastmask.schema import (  # noqa: F401
    AGE_NAMES,
    DEFAULT_AGE_BOUNDS,
    GENDER_NAMES,
    MASK_NAMES,
    NUM_CLASSES,
    TASKS,
    class_names,
    decode_class,
    decode_classes,
    encode_class,
)

log = logging.getLogger(__name__)

STEM_TO_MASK = {
    "mask1": 0,
    "mask2": 0,
    "mask3": 0,
    "mask4": 0,
    "mask5": 0,
    "incorrect_mask": 1,
    "normal": 2,
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
TRAIN_CSV_COLUMNS = ["id", "gender", "race", "age", "path"]
INFO_CSV_COLUMNS = ["ImageID", "ans"]
AGE_RANGE = (18, 60)
# A correction's age beyond this is a typo (200 for 20), not a person.
MAX_AGE = 120
INDEX_COLUMNS = ["path", "person", "id", "gender", "age", "age_band", "mask", "cls", "ext", "stem"]
_CACHE_NAME = ".fastmask-index"
# 2: paths relative to the train folder, so the cache survives a move or another cwd.
_CACHE_VERSION = 2
_FOLDER_RE = re.compile(
    r"^(?P<id>[0-9]{6}(?:-[0-9]+)?)_(?P<gender>[^_]+)_(?P<race>[^_]+)_(?P<age>-?[0-9]+)$"
)


def check_age_bounds(bounds: Sequence[int]) -> tuple[int, int]:
    """Validate two increasing age boundaries, e.g. (30, 60) or (30, 58)."""
    if len(bounds) != 2 or not int(bounds[0]) < int(bounds[1]):
        raise DataError(f"age bounds must be two increasing ages like 30 60, got {list(bounds)}")
    return int(bounds[0]), int(bounds[1])


def age_band(age: Any, bounds: Sequence[int] = DEFAULT_AGE_BOUNDS) -> Any:
    """Age band: 0 below bounds[0], 1 below bounds[1], else 2."""
    lo, hi = check_age_bounds(bounds)
    a = np.asarray(age)
    band = (a >= lo).astype(np.int64) + (a >= hi).astype(np.int64)
    return band if isinstance(age, np.ndarray) else int(band)


@dataclass(frozen=True)
class Person:
    """A person folder `{id}_{gender}_{race}_{age}`; the folder name is the key."""

    folder: str
    id: str
    gender: int
    race: str
    age: int


def parse_person_folder(name: str) -> Person:
    """Parse a person folder name; raise DataError saying what was expected."""
    m = _FOLDER_RE.match(name)
    if not m:
        raise DataError(
            f"folder name {name!r} is not {{id}}_{{gender}}_{{race}}_{{age}} "
            "(e.g. 000001_female_Asian_45)"
        )
    gender = m["gender"].lower()
    if gender not in GENDER_NAMES:
        raise DataError(f"folder {name!r}: gender {m['gender']!r} is not male or female")
    age = int(m["age"])
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        raise DataError(f"folder {name!r}: age {age} is outside {AGE_RANGE[0]}..{AGE_RANGE[1]}")
    return Person(name, m["id"], GENDER_NAMES.index(gender), m["race"], age)


def sniff_image(path: Path) -> str | None:
    """'jpeg' or 'png' from the magic bytes, None when the file is neither (or empty)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


# ---------------------------------------------------------------------------------------
# Problems: errors by default, warnings and skipped items with lenient=True
# ---------------------------------------------------------------------------------------


@dataclass
class Problems:
    """Collects data problems; `finish` raises them all at once unless lenient."""

    lenient: bool
    items: list[dict[str, str]] = field(default_factory=list)
    # False when the caller reports the items itself (fastmask check).
    warn: bool = True

    def add(self, path: Path | str, reason: str) -> None:
        self.items.append({"path": str(path), "reason": reason})
        if self.lenient and self.warn:
            log.warning("skipped %s: %s", path, reason)

    def finish(self, what: str) -> None:
        if self.items and not self.lenient:
            shown = "\n".join(f"  {p['path']}: {p['reason']}" for p in self.items[:20])
            more = f"\n  ... and {len(self.items) - 20} more" if len(self.items) > 20 else ""
            raise DataError(
                f"{len(self.items)} problem(s) in {what}:\n{shown}{more}\n"
                "Fix them, or pass --lenient (lenient=True) to skip each item with a warning."
            )


# ---------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------


def resolve_data_root(data: str | Path) -> Path:
    """Accept DATA (holding train/ and eval/) or DATA/train; return DATA/train."""
    root = Path(data)
    if (root / "images").is_dir() and not (root / "train").is_dir():
        return root
    train = root / "train"
    if not (train / "images").is_dir():
        raise DataError(
            f"{root} does not look like a data set: expected {train / 'images'} "
            "(layout DATA/train/images/{id}_{gender}_{race}_{age}/mask1.jpg ...)"
        )
    return train


def _visible(entries: Iterable[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
    # macOS `._*` junk and every other dot-file are never data.
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _fingerprint(images_dir: Path) -> tuple[str, list[tuple[str, list[os.DirEntry[str]]]]]:
    """Hash of every visible name, size and mtime; also returns the listing for the scan."""
    h = hashlib.sha256()
    listing: list[tuple[str, list[os.DirEntry[str]]]] = []
    with os.scandir(images_dir) as top:
        folders = _visible(top)
    for folder in folders:
        h.update(folder.name.encode() + b"/")
        if not folder.is_dir():
            listing.append((folder.name, []))
            st = folder.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
            continue
        with os.scandir(folder.path) as inner:
            files = _visible(inner)
        listing.append((folder.name, files))
        for f in files:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest(), listing


def _scan(
    images_dir: Path, listing: list[tuple[str, list[os.DirEntry[str]]]]
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Parse folders and files into raw rows (labels as written) and a list of problems."""
    rows: list[dict[str, object]] = []
    problems: list[dict[str, str]] = []

    def problem(path: Path | str, reason: str) -> None:
        problems.append({"path": str(path), "reason": reason})

    for folder_name, files in listing:
        folder = images_dir / folder_name
        if not folder.is_dir():
            problem(folder, "expected a person folder, found a file")
            continue
        try:
            person = parse_person_folder(folder_name)
        except DataError as err:
            problem(folder, str(err))
            continue
        if not files:
            problem(folder, "empty person folder (expected 7 images)")
            continue
        by_stem: dict[str, list[os.DirEntry[str]]] = {}
        for f in files:
            stem, ext = os.path.splitext(f.name)
            if stem.lower() not in STEM_TO_MASK or ext.lower() not in IMAGE_EXTENSIONS:
                problem(
                    f.path,
                    "unexpected file (expected mask1..mask5, incorrect_mask, normal "
                    "with .jpg, .jpeg or .png)",
                )
                continue
            by_stem.setdefault(stem.lower(), []).append(f)
        for stem in STEM_TO_MASK:
            found = by_stem.get(stem, [])
            if not found:
                problem(folder / stem, f"missing image {stem}.* in person folder")
                continue
            if len(found) > 1:
                names = ", ".join(f.name for f in found)
                problem(folder / stem, f"duplicated image stem {stem}: {names}")
                continue
            f = found[0]
            if f.stat().st_size == 0:
                problem(f.path, "empty file (0 bytes), expected a JPEG or PNG image")
                continue
            if sniff_image(Path(f.path)) is None:
                problem(f.path, "not a JPEG or PNG image (wrong magic bytes)")
                continue
            rows.append(
                {
                    "path": f.path,
                    "person": person.folder,
                    "id": person.id,
                    "gender": person.gender,
                    "age": person.age,
                    "mask": STEM_TO_MASK[stem],
                    "ext": os.path.splitext(f.name)[1].lower(),
                    "stem": stem,
                }
            )
    frame = pd.DataFrame(
        rows, columns=["path", "person", "id", "gender", "age", "mask", "ext", "stem"]
    )
    return frame, problems


def _read_cache(
    train_dir: Path, fingerprint: str
) -> tuple[pd.DataFrame, list[dict[str, str]]] | None:
    meta_path = train_dir / f"{_CACHE_NAME}.json"
    csv_path = train_dir / f"{_CACHE_NAME}.csv"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != _CACHE_VERSION or meta.get("fingerprint") != fingerprint:
            return None
        frame = pd.read_csv(csv_path, dtype={"id": str, "person": str})
        # Resolved against the train folder as the caller spells it (relative, absolute, link).
        frame["path"] = [os.path.join(train_dir, p) for p in frame["path"]]
        problems = [
            {"path": os.path.join(train_dir, p["path"]), "reason": p["reason"]}
            for p in meta.get("problems", [])
        ]
        return frame, problems
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(
    train_dir: Path, fingerprint: str, frame: pd.DataFrame, problems: list[dict[str, str]]
) -> None:
    # A read-only data folder only costs a rescan next time, so failures are not errors.
    from fastmask.files import write_csv_atomic, write_text_atomic

    def relative(path: str) -> str:
        return os.path.relpath(path, train_dir)

    try:
        stored = frame.assign(path=[relative(p) for p in frame["path"]])
        write_csv_atomic(stored, train_dir / f"{_CACHE_NAME}.csv")
        relative_problems = [{**p, "path": relative(p["path"])} for p in problems]
        meta = {
            "version": _CACHE_VERSION,
            "fingerprint": fingerprint,
            "problems": relative_problems,
        }
        write_text_atomic(train_dir / f"{_CACHE_NAME}.json", json.dumps(meta))
    except OSError as err:
        log.debug("index cache not written in %s: %s", train_dir, err)


def _check_train_csv(train_dir: Path, folders: set[str], problems: Problems) -> None:
    csv_path = train_dir / "train.csv"
    if not csv_path.exists():
        log.warning("%s is missing; person folders are the source of labels", csv_path)
        return
    table = read_csv_checked(csv_path, TRAIN_CSV_COLUMNS)
    listed = set(table["path"].astype(str))
    for name in sorted(listed - folders):
        problems.add(csv_path, f"row with path {name!r} has no usable person folder")
    for name in sorted(folders - listed):
        problems.add(train_dir / "images" / name, "person folder is not listed in train.csv")


def read_csv_checked(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """Read a CSV whose header must start with `columns`; a clear error otherwise."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    if list(table.columns[: len(columns)]) != list(columns):
        raise DataError(f"{path} has columns {list(table.columns)}, expected {','.join(columns)}")
    return table


def read_table(path: Path, columns: Sequence[str], numbers: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV that fastmask wrote: `columns` must be there (in any order), and `numbers`
    must hold a finite number in every row; a clear error naming the file otherwise."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:  # pandas' parser and decoding errors are ValueErrors
        raise DataError(f"cannot read {path}: {err}") from err
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(
            f"{path} has no column {', '.join(missing)} (columns: {', '.join(map(str, table))})"
        )
    values = table[list(numbers)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        row, col = bad[0]
        raise DataError(
            f"{path}: row {row + 2} has {numbers[col]} {table[numbers[col]].iloc[row]!r}, "
            "expected a number"
        )
    return table


# ---------------------------------------------------------------------------------------
# Corrections
# ---------------------------------------------------------------------------------------

CORRECTION_COLUMNS = ["id", "field", "value"]
MASK_CORRECTIONS = "swap_incorrect_normal, swap:STEM:STEM or set:STEM:wear|incorrect|not_wear"


def parse_mask_correction(value: str) -> tuple[str, str, str]:
    """A mask correction: ('swap', stem, stem) or ('set', stem, mask name)."""
    if value == "swap_incorrect_normal":
        return ("swap", "incorrect_mask", "normal")
    parts = value.split(":")
    if len(parts) == 3 and parts[1] in STEM_TO_MASK:
        if parts[0] == "swap" and parts[2] in STEM_TO_MASK and parts[2] != parts[1]:
            return ("swap", parts[1], parts[2])
        if parts[0] == "set" and parts[2] in MASK_NAMES:
            return ("set", parts[1], parts[2])
    raise DataError(f"mask value {value!r}, expected {MASK_CORRECTIONS}")


def read_corrections_csv(path: Path) -> pd.DataFrame:
    """A corrections CSV; lines starting with # are comments (a correction not accepted)."""
    import io

    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    kept = [line for line in lines if not line.lstrip().startswith("#")]
    numbers = [i + 1 for i, line in enumerate(lines) if not line.lstrip().startswith("#")]
    # A row with more fields than the header would shift into the wrong columns.
    widths = [len(r) for r in csv.reader(kept)]
    for n, width in zip(numbers[1:], widths[1:], strict=False):
        if widths and width > widths[0]:
            raise DataError(
                f"{path} row {n}: {width} fields, the header has {widths[0]} "
                "(quote a note that holds a comma)"
            )
    try:
        table = pd.read_csv(io.StringIO("\n".join(kept)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    if list(table.columns[:3]) != CORRECTION_COLUMNS:
        raise DataError(
            f"{path} has columns {list(table.columns)}, expected {','.join(CORRECTION_COLUMNS)}"
        )
    table["line"] = [n for n, line in zip(numbers[1:], kept[1:], strict=True) if line.strip()]
    return table


def load_corrections(source: str | Path | None = "default", disputed: bool = False) -> pd.DataFrame:
    """The corrections table: 'default' (shipped with fastmask), a CSV path, or None (none).

    Columns: id, field (gender | mask | age), value (male/female/flip; swap_incorrect_normal,
    swap:STEM:STEM or set:STEM:MASK; an age), status (default | disputed; disputed rows apply
    only with disputed=True). Lines starting with # are comments.
    """
    if source is None or source == "none":
        return pd.DataFrame(columns=[*CORRECTION_COLUMNS, "status"])
    if source == "default":
        with resources.as_file(resources.files("fastmask") / "resources" / "corrections.csv") as p:
            table = read_corrections_csv(Path(p))
    else:
        table = read_corrections_csv(Path(source))
    if "status" not in table.columns:
        table["status"] = "default"
    for _, row in table.iterrows():
        where = f"{source} row {row['line']}"
        if row["field"] == "gender" and row["value"] not in ("male", "female", "flip"):
            raise DataError(
                f"{where}: gender value {row['value']!r}, expected male, female or flip"
            )
        if row["field"] == "mask":
            try:
                parse_mask_correction(row["value"])
            except DataError as err:
                raise DataError(f"{where}: {err}") from err
        if row["field"] == "age" and not (
            str(row["value"]).isdigit() and 1 <= int(row["value"]) <= MAX_AGE
        ):
            raise DataError(
                f"{where}: age value {row['value']!r}, expected an integer age 1..{MAX_AGE}"
            )
        if row["field"] not in ("gender", "mask", "age"):
            raise DataError(f"{where}: field {row['field']!r}, expected gender, mask or age")
        if row["status"] not in ("default", "disputed"):
            raise DataError(f"{where}: status {row['status']!r}, expected default or disputed")
    if not disputed:
        table = table[table["status"] == "default"]
    return table.reset_index(drop=True)


def apply_corrections(
    frame: pd.DataFrame, corrections: pd.DataFrame, exclude: bool = False
) -> tuple[pd.DataFrame, int]:
    """Fix (or with exclude=True drop) the people the corrections name; returns (frame, people)."""
    frame = frame.copy()
    touched: set[str] = set()
    for row in corrections.itertuples(index=False):
        sel = frame["id"] == row.id
        if not sel.any():
            continue
        touched.add(str(row.id))
        if exclude:
            continue
        if row.field == "gender":
            if row.value == "flip":
                frame.loc[sel, "gender"] = 1 - frame.loc[sel, "gender"]
            else:
                frame.loc[sel, "gender"] = GENDER_NAMES.index(str(row.value))
        elif row.field == "age":
            frame.loc[sel, "age"] = int(row.value)
        elif row.field == "mask":
            op, stem, other = parse_mask_correction(str(row.value))
            if op == "set":
                frame.loc[sel & (frame["stem"] == stem), "mask"] = MASK_NAMES.index(other)
            else:
                a, b = sel & (frame["stem"] == stem), sel & (frame["stem"] == other)
                frame.loc[a, "mask"], frame.loc[b, "mask"] = STEM_TO_MASK[other], STEM_TO_MASK[stem]
    if exclude:
        frame = frame[~frame["id"].isin(touched)]
    return frame.reset_index(drop=True), len(touched)


# ---------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------


@dataclass
class DataIndex:
    """The training index and what happened while building it."""

    frame: pd.DataFrame
    root: Path
    skipped: list[dict[str, str]]
    corrections_applied: int
    age_bounds: tuple[int, int]
    # Ids of a user's corrections file that name nobody here (a typo corrects nothing).
    unmatched_corrections: list[str] = field(default_factory=list)

    @property
    def people(self) -> pd.DataFrame:
        """One row per person: person, id, gender, age, age_band."""
        cols = ["person", "id", "gender", "age", "age_band"]
        return self.frame[cols].drop_duplicates("person").reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)


def with_labels(
    frame: pd.DataFrame, age_bounds: Sequence[int] = DEFAULT_AGE_BOUNDS
) -> pd.DataFrame:
    """(Re)compute age_band and cls for the given boundaries."""
    frame = frame.copy()
    frame["age_band"] = age_band(frame["age"].to_numpy(dtype=np.int64), age_bounds)
    frame["cls"] = encode_class(frame["mask"], frame["gender"], frame["age_band"])
    return frame


def build_index(
    data: str | Path,
    *,
    age_bounds: Sequence[int] = DEFAULT_AGE_BOUNDS,
    corrections: str | Path | None = "default",
    disputed: bool = False,
    exclude_corrected: bool = False,
    lenient: bool = False,
    use_cache: bool = True,
    warn: bool = True,
) -> DataIndex:
    """Index DATA/train (or a train folder): one row per image, labels corrected.

    Raises DataError listing every problem unless lenient, in which case each problem is
    logged as a warning, the item skipped and listed in `skipped`.
    """
    train_dir = resolve_data_root(data)
    images_dir = train_dir / "images"
    bounds = check_age_bounds(age_bounds)
    fingerprint, listing = _fingerprint(images_dir)
    cached = _read_cache(train_dir, fingerprint) if use_cache else None
    if cached is None:
        raw, scan_problems = _scan(images_dir, listing)
        if use_cache:
            _write_cache(train_dir, fingerprint, raw, scan_problems)
    else:
        raw, scan_problems = cached
        log.debug("index cache hit for %s", train_dir)
    problems = Problems(lenient, warn=warn)
    for p in scan_problems:
        problems.add(p["path"], p["reason"])
    _check_train_csv(train_dir, set(raw["person"].astype(str)), problems)
    problems.finish(str(images_dir))
    table = load_corrections(corrections, disputed=True)
    unmatched = []
    if corrections not in (None, "none", "default"):
        # The shipped list names real-data ids, so only a user's file is checked.
        unmatched = sorted(set(table["id"].astype(str)) - set(raw["id"].astype(str)))
        if unmatched and warn:
            log.warning(
                "%s: %d id(s) match nobody in %s: %s",
                corrections,
                len(unmatched),
                train_dir,
                ", ".join(unmatched[:10]) + (" ..." if len(unmatched) > 10 else ""),
            )
    if not disputed:
        table = table[table["status"] == "default"]
    frame, applied = apply_corrections(raw, table, exclude=exclude_corrected)
    frame = with_labels(frame, bounds)[INDEX_COLUMNS]
    frame = frame.astype({c: "int64" for c in ("gender", "age", "age_band", "mask", "cls")})
    if frame.empty:
        raise DataError(f"no usable images under {images_dir}")
    return DataIndex(frame, train_dir, problems.items, applied, bounds, unmatched)


def read_eval(data: str | Path, *, lenient: bool = False) -> pd.DataFrame:
    """eval/info.csv resolved to files, in info.csv order: columns ImageID, path.

    `data` is DATA or DATA/eval. An ImageID whose file is missing is looked up by stem with
    any image extension, case-insensitively, before it is reported.
    """
    problems = Problems(lenient)
    out = eval_table(data, problems)
    return out[out["path"].notna()].reset_index(drop=True)


def eval_table(data: str | Path, problems: Problems) -> pd.DataFrame:
    """Every info.csv row with its file (path None when there is none); raises unless lenient."""
    root = Path(data)
    eval_dir = root / "eval" if (root / "eval" / "info.csv").exists() else root
    info_path = eval_dir / "info.csv"
    if not info_path.exists():
        raise DataError(f"{info_path} not found (expected DATA/eval/info.csv with ImageID,ans)")
    info = read_csv_checked(info_path, INFO_CSV_COLUMNS)
    images_dir = eval_dir / "images"
    by_stem: dict[str, list[str]] = {}
    if images_dir.is_dir():
        with os.scandir(images_dir) as it:
            for e in _visible(it):
                stem, ext = os.path.splitext(e.name)
                if ext.lower() in IMAGE_EXTENSIONS:
                    by_stem.setdefault(stem.lower(), []).append(e.name)
    paths: list[str | None] = []
    seen: set[str] = set()
    for image_id in info["ImageID"]:
        if image_id in seen:
            problems.add(info_path, f"ImageID {image_id} is listed twice")
        seen.add(image_id)
        exact = images_dir / image_id
        if exact.is_file():
            paths.append(str(exact))
            continue
        found = by_stem.get(os.path.splitext(image_id)[0].lower(), [])
        if len(found) == 1:
            paths.append(str(images_dir / found[0]))
        else:
            problems.add(exact, f"ImageID {image_id} from {info_path} has no image file")
            paths.append(None)
    problems.finish(str(info_path))
    # object dtype: pandas >= 3 would turn None into NaN in a str column, a "path" of "nan"
    return pd.DataFrame({"ImageID": info["ImageID"], "path": pd.Series(paths, dtype=object)})


# ---------------------------------------------------------------------------------------
# Splits by person
# ---------------------------------------------------------------------------------------


def person_folds(frame: pd.DataFrame, k: int, seed: int = 0) -> pd.Series:
    """Fold 0..k-1 for every person, stratified by gender x age band; seeded.

    Within each stratum people are shuffled and dealt round-robin, starting where the last
    stratum stopped, so fold sizes differ by at most one person.
    """
    if k < 2:
        raise DataError(f"folds must be >= 2, got {k}")
    people = frame.drop_duplicates("person")[["person", "gender", "age_band"]]
    if len(people) < k:
        raise DataError(f"cannot split {len(people)} people into {k} folds")
    rng = np.random.default_rng(seed)
    fold: dict[str, int] = {}
    start = 0
    for _, group in people.sort_values("person").groupby(["gender", "age_band"], sort=True):
        names = group["person"].to_numpy()
        names = names[rng.permutation(len(names))]
        for i, name in enumerate(names):
            fold[str(name)] = (start + i) % k
        start = (start + len(names)) % k
    return pd.Series(fold, name="fold").sort_index()


def split_people(
    frame: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Person-level train/validation split stratified by gender x age band."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"validation fraction must be in (0, 1), got {val_fraction}")
    people = frame.drop_duplicates("person")[["person", "gender", "age_band"]]
    rng = np.random.default_rng(seed)
    val: set[str] = set()
    for _, group in people.sort_values("person").groupby(["gender", "age_band"], sort=True):
        names = group["person"].to_numpy()
        take = int(round(len(names) * val_fraction))
        val.update(str(n) for n in names[rng.permutation(len(names))[:take]])
    if not val or len(val) == len(people):
        raise DataError(
            f"{len(people)} people are too few for a {val_fraction:.0%} validation split"
        )
    in_val = frame["person"].isin(val)
    return frame[~in_val].reset_index(drop=True), frame[in_val].reset_index(drop=True)


def kfold_people(
    frame: pd.DataFrame, k: int, seed: int = 0
) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """K person-level (train, validation) pairs from `person_folds`."""
    folds = person_folds(frame, k, seed)
    f = frame["person"].map(folds)
    return [
        (frame[f != i].reset_index(drop=True), frame[f == i].reset_index(drop=True))
        for i in range(k)
    ]
