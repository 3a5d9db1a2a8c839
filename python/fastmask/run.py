"""`python -m fastmask run RECIPE --data DATA --out DIR`: the competitor's whole job.

files -> data index -> native loader -> trainer -> predictions -> combine -> CSV, for every
task and fold of a recipe (see `fastmask.recipe`):

1. faces, when a task crops to faces (cached in DATA/faces.csv);
2. per task, K person-level folds into DIR/<task>/fold<i>/ (the same people per fold for
   every task);
3. DIR/oof.csv: every training image predicted by the fold that did not train on it;
4. the OOF 18-class macro F1, accuracy and per-task F1 (validation age bands 30/60), and
   with `tune_bias` class biases fitted on the OOF probabilities (DIR/bias.json);
5. eval predictions, the soft vote of the K folds (and flip TTA), into DIR/pred/<task>.csv,
   combined into DIR/submission.csv in info.csv order, scored when DATA/eval/truth.csv exists;
6. DIR/summary.json, DIR/report/ (curves, OOF confusion, per-class F1) and DIR/report.md.

The same command again continues where the job stopped: finished folds are skipped, a
killed fold resumes from its last.pt, and predictions are reused while their checkpoints are
unchanged. A changed recipe on a DIR holding a checkpoint is refused, naming the keys that
differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from fastmask.argtypes import non_negative_int
from fastmask.crops import data_key
from fastmask.errors import DataError, FastmaskError
from fastmask.files import output_dir, write_csv_atomic, write_text_atomic
from fastmask.recipe import Recipe, load_recipe, recipe_differences, shipped_recipes
from fastmask.schema import MULTI, TASKS, class_names
from fastmask.train.runfiles import write_json

log = logging.getLogger(__name__)

JOB_VERSION = 1


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def file_stamp(paths: list[Path]) -> list[list[Any]]:
    """(name, size, mtime) of files: what a cached result was computed from."""
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


class Job:
    """One recipe run into one folder; each step skips what an earlier run finished."""

    def __init__(
        self, recipe: Recipe, data: str | Path, out: str | Path, runtime: dict[str, Any]
    ) -> None:
        self.recipe = recipe
        self.data = Path(data)
        self.out = Path(out)
        # --device / --threads: how fast the job runs, never what it computes.
        self.runtime = runtime
        self.steps_path = self.out / "steps.json"
        self.steps: dict[str, Any] = read_json(self.steps_path) or {}

    # ---- the recipe on record -----------------------------------------------------------

    def claim_folder(self) -> None:
        """Record the recipe in DIR (recipe.json, recipe.toml); `run` has already checked that
        nothing refuses it (`refuse_other_recipe`)."""
        output_dir(self.out)
        write_json(
            self.out / "recipe.json",
            {
                "version": JOB_VERSION,
                "name": self.recipe.name,
                "description": self.recipe.description,
                "fingerprint": self.recipe.fingerprint(),
                "effective": self.recipe.effective(),
            },
        )
        write_text_atomic(self.out / "recipe.toml", self.recipe.text)

    def refuse_other_recipe(self) -> None:
        """Refuse a DIR that is a file, holds something else, or ran a different recipe."""
        if self.out.exists() and not self.out.is_dir():
            raise FastmaskError(f"--out {self.out} is a file, not a folder")
        effective = self.recipe.effective()
        record = self.out / "recipe.json"
        old = read_json(record)
        if old is None and self.out.exists() and any(self.out.iterdir()):
            raise FastmaskError(
                f"--out {self.out} is not empty and holds no recipe.json of a fastmask run; "
                "choose an empty or new folder"
            )
        if old is not None:
            differ = recipe_differences(old.get("effective", {}), effective)
            # Until a fold has saved anything nothing was computed with the old recipe (a run
            # stopped by bad data, say): the new one simply takes the folder over.
            if differ and self.computed():
                shown = ", ".join(
                    f"{k} ({old.get('effective', {}).get(k)!r} -> {effective.get(k)!r})"
                    for k in differ[:8]
                )
                more = f" and {len(differ) - 8} more" if len(differ) > 8 else ""
                raise FastmaskError(
                    f"{self.out} ran recipe {old.get('name')!r} with other settings: "
                    f"{shown}{more}. Use a new --out, or the same recipe and --set values"
                )

    def computed(self) -> bool:
        """Whether any fold in DIR saved a result (a checkpoint or a summary), under any
        recipe's fold layout."""
        return any(
            p.name in ("last.pt", "best.pt", "summary.json", "val_predictions.csv")
            for p in self.out.rglob("*")
            if p.parent != self.out
        )

    def save_steps(self) -> None:
        write_json(self.steps_path, self.steps)

    # ---- 1. faces -----------------------------------------------------------------------

    def faces(self) -> None:
        if not self.recipe.crops_to_faces:
            return
        from fastmask.faces import detect_faces

        start = time.perf_counter()
        settings = {k: v for k, v in self.recipe.faces.items() if v}
        detect_faces(self.data, **settings)
        self.steps["faces_s"] = self.steps.get("faces_s", 0.0) + time.perf_counter() - start
        self.save_steps()

    # ---- 2. folds -----------------------------------------------------------------------

    def task_dir(self, task: str) -> Path:
        return self.out / task

    def fold_dirs(self, task: str) -> list[Path]:
        from fastmask.oof import fold_dirs

        return fold_dirs(self.task_dir(task), self.recipe.folds)

    def fold_summaries(self, task: str) -> list[dict[str, Any] | None]:
        return [read_json(folder / "summary.json") for folder in self.fold_dirs(task)]

    def started(self, task: str) -> bool:
        """Every fold of `task` is finished or has a last.pt to go on from: training will not
        build its starting weights."""
        return self.folds_finished(task) or all(
            (folder / "last.pt").exists() for folder in self.fold_dirs(task)
        )

    def folds_finished(self, task: str) -> bool:
        return all(s is not None and s.get("finished") for s in self.fold_summaries(task))

    def excluded_paths(self) -> set[str]:
        """Images any fold left out (`lenient`), as listed in the folds' summaries."""
        return {
            data_key(str(item["path"]))
            for task in self.recipe.tasks
            for s in self.fold_summaries(task)
            for item in (s or {}).get("excluded", [])
        }

    def train(self) -> None:
        from fastmask.train.loop import train

        for n, task in enumerate(self.recipe.tasks, 1):
            if self.folds_finished(task):
                log.info("task %s (%d/%d): %d folds done", task, n, len(self.recipe.tasks),
                         self.recipe.folds)  # fmt: skip
                continue
            log.info("task %s (%d/%d): training %d folds", task, n, len(self.recipe.tasks),
                     self.recipe.folds)  # fmt: skip
            train(self.config(task), self.task_dir(task))

    def config(self, task: str) -> Any:
        return self.recipe.task_config(task, self.data, **self.runtime)

    # ---- 3-4. out of fold ---------------------------------------------------------------

    def oof(self) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
        """oof.csv, its scores and (with tune_bias) the fitted class biases."""
        from fastmask import oof as O
        from fastmask.train.splits import load_frame

        frame = load_frame(self.config(self.recipe.tasks[0]))
        # Images a lenient run left out (header check) have no prediction to score.
        left_out = self.excluded_paths()
        if left_out:
            log.info("out of fold: %d image(s) the folds left out are not scored", len(left_out))
            keys = [data_key(p) for p in frame["path"]]
            frame = frame[[k not in left_out for k in keys]].reset_index(drop=True)
        table = O.assemble_oof(
            frame, {t: self.fold_dirs(t) for t in self.recipe.tasks}, self.recipe.folds > 1
        )
        if self.recipe.folds == 1:
            log.info("a single split: the scores are of its %d validation images", len(table))
        truth = O.truth_classes(table)
        figures = O.scores(truth, table["pred"].to_numpy())
        bias = None
        if self.recipe.tune_bias:
            from fastmask.bias import honest_bias, joint_log_probs

            logp = joint_log_probs(O.head_probabilities(table))
            bias = honest_bias(logp, truth, table["person"].to_numpy(), self.recipe.seed)
            write_json(self.out / "bias.json", bias)
            if bias["applied"]:
                table["pred_tuned"] = O.oof_answers(table, bias["bias"])
            log.info(
                "class biases: OOF macro F1 %.4f -> %.4f in sample; held-out halves %s; %s",
                bias["oof_before"],
                bias["oof_after_in_sample"],
                ", ".join(
                    f"{h['heldout_before']:.4f} -> {h['heldout_after']:.4f}" for h in bias["halves"]
                ),
                "applied" if bias["applied"] else "not applied (no held-out gain)",
            )
        write_csv_atomic(table, self.out / "oof.csv")
        figures["folds"] = O.fold_scores(table)
        figures["images"] = len(table)
        return table, figures, bias

    # ---- 5. eval predictions and the submission ----------------------------------------

    def check_eval(self) -> None:
        """Refuse eval images predict would fail on (on_error = "raise"), before training: a
        full decode, as predict does (about a second for the competition's 12,600 images)."""
        if self.recipe.predict["on_error"] != "raise":
            return
        from fastmask.check import header_problems
        from fastmask.data import Problems, eval_table

        problems = Problems(lenient=True, warn=False)
        paths = eval_table(self.data, problems)["path"].dropna().tolist()
        bad = problems.items + header_problems(paths, self.threads(), full=True)
        if bad:
            listing = "\n".join(f"  {p['path']}: {p['reason']}" for p in bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise DataError(
                f"{len(bad)} eval image(s) cannot be predicted:\n{listing}{more}\nFix them, or "
                '--set predict.on_error="fallback" to answer them with the training prior.'
            )

    def threads(self) -> int | None:
        return self.runtime.get("threads") or self.recipe.train.get("threads") or None

    def checkpoints(self, task: str) -> list[Path]:
        """The finished folds' checkpoints predict reads; refuses one that is gone."""
        which = self.recipe.predict["checkpoint"]
        paths = [folder / f"{which}.pt" for folder in self.fold_dirs(task)]
        for path in paths:
            if not path.is_file():
                raise FastmaskError(
                    f"{path} is missing though its fold finished: put it back, or delete "
                    f"{path.parent} to train that fold again"
                )
        return paths

    def prediction_stamp(self, task: str) -> dict[str, Any]:
        info = self.data / "eval" / "info.csv"
        return {
            "checkpoints": file_stamp(self.checkpoints(task)),
            "info": file_stamp([info]) if info.exists() else None,
            "tta": self.recipe.predict["tta"],
            "on_error": self.recipe.predict["on_error"],
        }

    def predictions(self) -> dict[str, Path]:
        from fastmask.predict import predict, record_path

        threads = self.threads()
        device = self.runtime.get("device") or self.recipe.train.get("device") or "auto"

        out = {}
        for task in self.recipe.tasks:
            path = self.out / "pred" / f"{task}.csv"
            stamp_path = record_path(path)  # predict's record of the file, stamped below
            stamp = self.prediction_stamp(task)
            old = read_json(stamp_path)
            if path.exists() and old is not None and old.get("stamp") == stamp:
                log.info("predictions %s: up to date", path)
                out[task] = path
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            predict(
                self.checkpoints(task),
                self.data,
                path,
                tta=self.recipe.predict["tta"],
                batch_size=self.recipe.predict["batch_size"],
                threads=threads,
                device=device,
                on_error=self.recipe.predict["on_error"],
            )
            seconds = time.perf_counter() - start
            # Added to predict's own record (task, checkpoints), which combine still reads.
            record = read_json(stamp_path) or {}
            write_json(stamp_path, {**record, "stamp": stamp, "seconds": seconds})
            out[task] = path
        return out

    def submission(self, preds: dict[str, Path], bias: dict[str, Any] | None) -> Path:
        from fastmask.combine import combine

        path = self.out / "submission.csv"
        applied = bias["bias"] if bias is not None and bias["applied"] else None
        info = self.data / "eval" / "info.csv"
        if MULTI in preds:
            combine(info, path, multi=preds[MULTI], bias=applied)
        else:
            combine(info, path, **{t: preds[t] for t in TASKS}, bias=applied)
        return path

    def evaluation(self, submission: Path) -> dict[str, Any] | None:
        truth = self.data / "eval" / "truth.csv"
        if not truth.exists():
            return None
        from fastmask.evaluate import evaluate

        return evaluate(submission, truth, self.out / "evaluation")

    # ---- 6. summary and report ---------------------------------------------------------

    def inputs_stamp(self) -> str:
        """What the summary was computed from: recipe, checkpoints, predictions, truth."""
        parts: list[Any] = [self.recipe.fingerprint()]
        for task in self.recipe.tasks:
            parts.append(file_stamp(self.checkpoints(task)))
            pred = self.out / "pred" / f"{task}.csv"
            parts.append(file_stamp([pred]) if pred.exists() else None)
        truth = self.data / "eval" / "truth.csv"
        parts.append(file_stamp([truth]) if truth.exists() else None)
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def summary(
        self,
        figures: dict[str, Any],
        bias: dict[str, Any] | None,
        evaluation: dict[str, Any] | None,
        post_s: float,
    ) -> dict[str, Any]:
        folds = {t: [s or {} for s in self.fold_summaries(t)] for t in self.recipe.tasks}
        train_s = sum(float(s.get("train_s", 0.0)) for fs in folds.values() for s in fs)
        images = sum(
            float(s.get("images_per_s", 0.0)) * float(s.get("train_s", 0.0))
            for fs in folds.values()
            for s in fs
        )
        fold_wall = sum(float(s.get("wall_s", 0.0)) for fs in folds.values() for s in fs)
        predict_s = 0.0
        for task in self.recipe.tasks:
            stamp = read_json(self.out / "pred" / f"{task}.csv.json") or {}
            predict_s += float(stamp.get("seconds", 0.0))
        wall = fold_wall + predict_s + float(self.steps.get("faces_s", 0.0)) + post_s
        per_fold = figures["folds"]
        for entry in per_fold:
            entry["task_best_val_f1"] = {
                t: folds[t][entry["fold"]].get("best_macro_f1") for t in self.recipe.tasks
            }
        result: dict[str, Any] = {
            "recipe": self.recipe.name,
            "description": self.recipe.description,
            "data": str(self.data),
            "tasks": list(self.recipe.tasks),
            "folds": self.recipe.folds,
            # Out of fold with K >= 2 folds; a single split scores its held-out people only.
            "validation": "out-of-fold" if self.recipe.folds > 1 else "holdout",
            "oof_images": figures["images"],
            "oof_macro_f1": figures["macro_f1"],
            "oof_accuracy": figures["accuracy"],
            "oof_per_task_f1": figures["per_task_f1"],
            "oof_per_class_f1": dict(zip(class_names(), figures["per_class_f1"], strict=True)),
            "per_fold": per_fold,
            "eval_macro_f1": evaluation["macro_f1"] if evaluation else None,
            "eval_accuracy": evaluation["accuracy"] if evaluation else None,
            "eval_per_task_f1": (
                {t: evaluation[f"{t}_macro_f1"] for t in TASKS} if evaluation else None
            ),
            "bias": bias,
            "wall_s": round(wall, 2),
            "train_s": round(train_s, 2),
            "predict_s": round(predict_s, 2),
            "images_per_s": round(images / train_s, 2) if train_s else 0.0,
            "submission": str(self.out / "submission.csv"),
            "finished": True,
            "inputs": self.inputs_stamp(),
        }
        return result

    def report(self, oof_table: Any, summary: dict[str, Any]) -> None:
        from fastmask.metrics import confusion
        from fastmask.report import (
            load_run,
            plot_confusion,
            plot_curves,
            plot_f1_bars,
        )

        folder = self.out / "report"
        folder.mkdir(parents=True, exist_ok=True)
        for task in self.recipe.tasks:
            folders = self.fold_dirs(task)
            runs = [load_run(f, f"fold{i}") for i, f in enumerate(folders)]
            plot_curves(runs, folder / f"curves_{task}.png")
        names = class_names()
        cm = confusion(oof_table["cls"], oof_table["pred"], len(names))
        title = f"out of fold, {self.recipe.name}: macro F1 {summary['oof_macro_f1']:.4f}"
        plot_confusion(cm, names, folder / "oof_confusion.png", title)
        plot_f1_bars(
            names,
            list(summary["oof_per_class_f1"].values()),
            folder / "oof_per_class_f1.png",
            f"out of fold, {self.recipe.name}: per-class F1",
        )
        write_text_atomic(self.out / "report.md", report_markdown(self, summary))

    # ---- the whole job ------------------------------------------------------------------

    def finished_summary(self) -> dict[str, Any] | None:
        """The summary of an earlier run when nothing it was computed from has changed."""
        old = read_json(self.out / "summary.json")
        if old is None or not old.get("finished"):
            return None
        if not all(self.folds_finished(t) for t in self.recipe.tasks):
            return None
        for task in self.recipe.tasks:
            stamp = read_json(self.out / "pred" / f"{task}.csv.json")
            if stamp is None or stamp.get("stamp") != self.prediction_stamp(task):
                return None
        if not (self.out / "report.md").exists():
            return None
        return old if old.get("inputs") == self.inputs_stamp() else None

    def run(self) -> dict[str, Any]:
        self.refuse_other_recipe()
        done = self.finished_summary()
        if done is not None:
            log.info("%s: the job is finished and up to date; nothing to do", self.out)
            return done
        # Before DIR records the recipe: a refused one must not be taken for DIR's recipe.
        self.recipe.check_models()
        self.recipe.check_weights(started=[t for t in self.recipe.tasks if self.started(t)])
        self.check_eval()
        self.claim_folder()
        self.faces()
        self.train()
        start = time.perf_counter()
        oof_table, figures, bias = self.oof()
        preds = self.predictions()
        submission = self.submission(preds, bias)
        evaluation = self.evaluation(submission)
        summary = self.summary(figures, bias, evaluation, time.perf_counter() - start)
        self.report(oof_table, summary)
        write_json(self.out / "summary.json", summary)
        return summary


def run_job(
    recipe: Recipe,
    data: str | Path,
    out: str | Path,
    *,
    device: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run (or continue) `recipe` on DATA into `out`; returns the summary."""
    if not (Path(data) / "train").is_dir():
        raise FastmaskError(f"--data {data}: expected a data folder holding train/ (and eval/)")
    if not (Path(data) / "eval" / "info.csv").exists():
        raise FastmaskError(f"--data {data}: no eval/info.csv to predict for the submission")
    runtime = {k: v for k, v in (("device", device), ("threads", threads)) if v is not None}
    return Job(recipe, data, out, runtime).run()


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def report_markdown(job: Job, s: dict[str, Any]) -> str:
    """report.md: the run on one page."""
    r = job.recipe
    task_f1 = s["oof_per_task_f1"]
    lines = [
        f"# fastmask run: {r.name}",
        "",
        r.description or "",
        "",
        f"Data `{s['data']}`; tasks {', '.join(r.tasks)}; {r.folds} person-level folds; "
        f"seed {r.seed}.",
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| OOF 18-class macro F1 | {_fmt(s['oof_macro_f1'])} |",
        f"| OOF accuracy | {_fmt(s['oof_accuracy'])} |",
        f"| OOF macro F1 mask / gender / age | {_fmt(task_f1['mask'])} / "
        f"{_fmt(task_f1['gender'])} / {_fmt(task_f1['age'])} |",
        f"| eval 18-class macro F1 (truth.csv) | {_fmt(s['eval_macro_f1'])} |",
        f"| wall time | {s['wall_s']:.0f} s |",
        f"| training throughput | {s['images_per_s']:.0f} images/s |",
        "",
        "## Folds",
        "",
        "| fold | people | images | OOF macro F1 | accuracy | "
        + " | ".join(f"{t} val F1" for t in r.tasks)
        + " |",
        "| ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in r.tasks) + " |",
    ]
    for f in s["per_fold"]:
        best = " | ".join(_fmt(f["task_best_val_f1"].get(t)) for t in r.tasks)
        lines.append(
            f"| {f['fold']} | {f['people']} | {f['images']} | {_fmt(f['macro_f1'])} | "
            f"{_fmt(f['accuracy'])} | {best} |"
        )
    bias = s.get("bias")
    if bias:
        lines += [
            "",
            "## Class biases (tune_bias)",
            "",
            "Fitted on one half of the people, scored on the other, both ways:",
            "",
            "| fitted on | fit before | fit after | held-out before | held-out after |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for h in bias["halves"]:
            lines.append(
                f"| half {h['fit_half']} ({h['fit_people']} people) | {_fmt(h['fit_before'])} | "
                f"{_fmt(h['fit_after'])} | {_fmt(h['heldout_before'])} | "
                f"{_fmt(h['heldout_after'])} |"
            )
        verdict = "applied to the submission" if bias["applied"] else "not applied"
        lines += ["", f"Mean held-out gain {bias['heldout_gain']:+.4f}: {verdict}."]
    lines += ["", "## Figures", ""]
    for task in r.tasks:
        lines.append(f"![{task} curves](report/curves_{task}.png)")
    lines += [
        "![OOF confusion](report/oof_confusion.png)",
        "![OOF per-class F1](report/oof_per_class_f1.png)",
        "",
        "## Files",
        "",
        "`submission.csv` (ImageID,ans), `oof.csv`, `summary.json`, `recipe.json` (every "
        "setting, defaults included), `pred/<task>.csv` (eval probabilities), "
        "`<task>/fold<i>/` (runs).",
        "",
    ]
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    sets = [*(args.set or []), *(["lenient=true"] if args.lenient else [])]
    recipe = load_recipe(args.recipe, sets)
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        s = run_job(recipe, args.data, args.out, device=args.device, threads=args.threads)
    tasks = s["oof_per_task_f1"]
    eval_part = f", eval {s['eval_macro_f1']:.4f}" if s.get("eval_macro_f1") is not None else ""
    print(
        f"{args.out}: OOF macro F1 {s['oof_macro_f1']:.4f} (mask {tasks['mask']:.4f}, gender "
        f"{tasks['gender']:.4f}, age {tasks['age']:.4f}){eval_part}; "
        f"this call {time.perf_counter() - start:.1f} s"
    )
    print(f"submission {s['submission']}; report {Path(args.out) / 'report.md'}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="the whole job from a recipe: faces, K-fold training, OOF score, submission",
        description=(
            "Run a recipe end to end and resumably: face boxes when it crops to faces, "
            "K person-level folds per task, out-of-fold predictions and score (oof.csv), "
            "the fold ensemble's eval predictions and DIR/submission.csv, summary.json and "
            f"report.md. Shipped recipes: {', '.join(shipped_recipes())}."
        ),
    )
    p.add_argument("recipe", help="a shipped recipe name or the path of a .toml recipe")
    p.add_argument("--data", required=True, help="data folder holding train/ and eval/")
    p.add_argument("--out", required=True, help="job folder (created; re-run to continue)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a recipe value: folds=3, epochs=5 (all tasks), age.lr=3e-4",
    )
    p.add_argument(
        "--lenient",
        action="store_true",
        help="leave out training images that cannot be read (excluded.csv): --set lenient=true",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    p.add_argument(
        "--threads",
        type=non_negative_int,
        help="loader threads (default: the recipe's, or all)",
    )
    p.set_defaults(func=run_command)
