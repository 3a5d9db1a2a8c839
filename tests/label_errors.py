"""Label-error finding, measured: a synthetic set with known label errors injected.

    python tests/label_errors.py --out /tmp/le            # 15 errors injected
    python tests/label_errors.py --out /tmp/le-clean --clean

Writes a synthetic set (`fastmask synth`), then injects, in distinct people chosen by the
seed: gender flipped for 5 people, age moved across a band for 5 people, and the mask1 and
normal files swapped for 5 people (the folder names and train.csv now disagree with the
pictures). Runs `fastmask run demo` and `fastmask suspects --top 30`, and prints how many
injected errors are among the top 30 suspects, and precision at 15 and 30. `--clean` skips
the injection, to show what the scores of an ordinary set look like. Resumable: a second
call reuses the data and the job. Not part of the test suite (it trains for minutes).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fastmask import cli
from fastmask.data import age_band

KINDS = ("gender", "age", "mask")


def moved_age(age: int) -> int:
    """An age in another band (30/60 bounds), as a mislabel would be."""
    if age < 30:
        return age + 15
    if age < 45:
        return max(18, age - 15)
    if age < 60:
        return 60
    return 45


def inject(data: Path, seed: int, per_kind: int = 5) -> pd.DataFrame:
    """Inject the errors into DATA/train in place; returns what was done."""
    train = data / "train"
    table = list(csv.DictReader((train / "train.csv").open()))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(table), size=3 * per_kind, replace=False)
    done = []
    for n, i in enumerate(chosen):
        kind = KINDS[n // per_kind]
        row = table[int(i)]
        folder = train / "images" / row["path"]
        if kind == "mask":
            a, b = next(folder.glob("mask1.*")), next(folder.glob("normal.*"))
            a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
            a.unlink()
            b.unlink()
            # The pictures trade places; each keeps the other's name (and so its label).
            (folder / f"mask1{b.suffix}").write_bytes(b_bytes)
            (folder / f"normal{a.suffix}").write_bytes(a_bytes)
            done.append({"kind": kind, "person": row["path"], "was": row["path"]})
            continue
        if kind == "gender":
            row["gender"] = "male" if row["gender"] == "female" else "female"
        else:
            before = int(row["age"])
            row["age"] = str(moved_age(before))
            assert age_band(int(row["age"])) != age_band(before)
        new = f"{row['id']}_{row['gender']}_{row['race']}_{row['age']}"
        folder.rename(folder.with_name(new))
        done.append({"kind": kind, "person": new, "was": row["path"]})
        row["path"] = new
    with (train / "train.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    # The index cache is keyed by names, sizes and mtimes: the swaps keep all three.
    for cache in train.glob(".fastmask-index.*"):
        cache.unlink()
    return pd.DataFrame(done)


def is_injected(row: pd.Series, injected: pd.DataFrame) -> bool:
    hits = injected[(injected["person"] == row["person"]) & (injected["kind"] == row["task"])]
    if hits.empty:
        return False
    if row["task"] == "mask":  # the swap, or one of its two files
        return any(s in str(row["stem"]) for s in ("mask1", "normal"))
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--people", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clean", action="store_true", help="inject nothing")
    p.add_argument("--set", action="append", default=[], help="recipe overrides for the run")
    args = p.parse_args(argv)
    data, job = args.out / "data", args.out / "job"
    record = args.out / "injected.json"
    if not (data / "train" / "train.csv").exists():
        shutil.rmtree(data, ignore_errors=True)
        synth = ["synth", "--out", str(data), "--people", str(args.people)]
        assert cli.main([*synth, "--eval-people", "10", "--seed", str(args.seed)]) == 0
        injected = inject(data, args.seed + 1, 0 if args.clean else 5)
        record.write_text(json.dumps(injected.to_dict("records"), indent=1))
    injected = pd.DataFrame(json.loads(record.read_text()), columns=["kind", "person", "was"])
    sets = [x for s in args.set for x in ("--set", s)]
    run = ["run", "demo", "--data", str(data), "--out", str(job), *sets]
    assert cli.main(run) == 0
    assert cli.main(["suspects", str(job), "--top", "30"]) == 0
    suspects = pd.read_csv(job / "suspects" / "suspects.csv", dtype={"stem": str})
    suspects["stem"] = suspects["stem"].fillna("")
    result: dict[str, object] = {
        "people": args.people,
        "injected": len(injected),
        "top_scores": suspects["score"].head(10).round(3).tolist(),
    }
    if len(injected):
        hit = suspects.apply(lambda r: is_injected(r, injected), axis=1)
        found = {
            (k, person)
            for k, person in zip(injected["kind"], injected["person"], strict=True)
            if any(hit & (suspects["person"] == person) & (suspects["task"] == k))
        }
        result.update(
            found_in_top30=len(found),
            found_by_kind={k: sum(1 for kk, _ in found if kk == k) for k in KINDS},
            precision_at_15=float(hit.head(15).mean()),
            precision_at_30=float(hit.head(30).mean()),
        )
    summary = json.loads((job / "summary.json").read_text())
    result["oof_macro_f1"] = summary["oof_macro_f1"]
    (args.out / "label_errors.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
