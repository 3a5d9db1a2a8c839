"""`fastmask run`: the whole job from a recipe, its OOF file, resume, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY_RECIPE
from fastmask import cli
from fastmask.data import build_index
from fastmask.errors import FastmaskError
from fastmask.oof import PROB_COLUMNS
from fastmask.recipe import load_recipe
from fastmask.run import run_job


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fastmask.synth import write_synthetic

    out = tmp_path_factory.mktemp("job") / "DATA"
    write_synthetic(out, people=12, eval_people=2, seed=5, workers=2)
    return out


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return path


@pytest.fixture(scope="module")
def finished(data: Path, recipe_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("jobs") / "a"
    assert cli.main(["run", str(recipe_path), "--data", str(data), "--out", str(out)]) == 0
    return out


def test_job_writes_every_output(finished: Path, data: Path):
    for name in ("oof.csv", "submission.csv", "summary.json", "report.md", "recipe.json"):
        assert (finished / name).stat().st_size > 0, name
    for name in ("curves_mask.png", "curves_age.png", "oof_confusion.png", "oof_per_class_f1.png"):
        assert (finished / "report" / name).read_bytes()[:4] == b"\x89PNG", name
    s = json.loads((finished / "summary.json").read_text())
    for key in ("recipe", "oof_macro_f1", "oof_accuracy", "eval_macro_f1", "wall_s",
                "images_per_s", "per_fold", "bias"):  # fmt: skip
        assert s[key] is not None, key
    assert set(s["oof_per_task_f1"]) == {"mask", "gender", "age"}
    assert [f["fold"] for f in s["per_fold"]] == [0, 1]
    assert s["validation"] == "out-of-fold" and s["recipe"] == "tiny"
    halves = s["bias"]["halves"]
    assert len(halves) == 2 and all("heldout_after" in h for h in halves)
    sub = pd.read_csv(finished / "submission.csv")
    info = pd.read_csv(data / "eval" / "info.csv")
    assert list(sub.columns) == ["ImageID", "ans"] and list(sub["ImageID"]) == list(info["ImageID"])
    assert sub["ans"].between(0, 17).all()
    for task in ("mask", "gender", "age"):
        # One record per prediction file: predict's task (combine checks it) and run's stamp.
        record = json.loads((finished / "pred" / f"{task}.csv.json").read_text())
        assert record["task"] == task and record["stamp"], task


def test_oof_predicts_every_image_once_by_the_fold_that_held_it_out(finished: Path, data: Path):
    oof = pd.read_csv(finished / "oof.csv")
    index = build_index(data).frame
    assert sorted(oof["path"]) == sorted(index["path"]) and oof["path"].is_unique
    for task in ("mask", "gender", "age"):
        for fold in (0, 1):
            summary = json.loads((finished / task / f"fold{fold}" / "summary.json").read_text())
            held = set(summary["val_people"])
            # Every row of this fold is a held-out person of this fold, for every task.
            assert set(oof.loc[oof["fold"] == fold, "person"]) == held
    # A person's images are all in one fold.
    assert (oof.groupby("person")["fold"].nunique() == 1).all()
    probs = oof[[f"mask_p{k}" for k in range(3)]].sum(axis=1)
    assert probs.between(0.999, 1.001).all()


def test_a_finished_job_trains_nothing_and_a_changed_recipe_is_refused(
    finished: Path, data: Path, recipe_path: Path
):
    stamps = {p: p.stat().st_mtime_ns for p in finished.rglob("*.pt")}
    recipe = load_recipe(str(recipe_path))
    summary = run_job(recipe, data, finished)
    assert summary == json.loads((finished / "summary.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("*.pt")} == stamps
    with pytest.raises(FastmaskError, match=r"other settings: age\.lr .*gender\.lr .*mask\.lr"):
        run_job(load_recipe(str(recipe_path), ["lr=0.01"]), data, finished)


def test_resume_after_a_kill_in_fold_2_of_age_gives_the_same_oof(
    finished: Path, data: Path, recipe_path: Path, tmp_path: Path, monkeypatch
):
    import fastmask.train.loop as loop

    real = loop.train_one_epoch
    calls = {"age": 0}

    def killed_in_age_fold_2(rt, loader, epoch, steps, *rest):
        if rt.config.task == "age":
            calls["age"] += 1
            if calls["age"] == 4:  # fold 2 (fold1), its second epoch
                raise KeyboardInterrupt
        return real(rt, loader, epoch, steps, *rest)

    monkeypatch.setattr(loop, "train_one_epoch", killed_in_age_fold_2)
    out = tmp_path / "b"
    recipe = load_recipe(str(recipe_path))
    with pytest.raises(KeyboardInterrupt):
        run_job(recipe, data, out)
    assert (out / "age" / "fold1" / "last.pt").exists()
    assert not (out / "oof.csv").exists()
    monkeypatch.setattr(loop, "train_one_epoch", real)
    run_job(recipe, data, out)
    columns = ["path", "fold", "pred"] + [c for cols in PROB_COLUMNS.values() for c in cols]
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "oof.csv")[columns], pd.read_csv(finished / "oof.csv")[columns]
    )
    age = pd.read_csv(out / "age" / "fold1" / "metrics.csv")
    assert list(age["epoch"]) == [1, 2]


def test_a_finished_job_continues_on_a_moved_data_folder(
    finished: Path, data: Path, recipe_path: Path, tmp_path: Path
):
    import shutil

    moved, job = tmp_path / "moved", tmp_path / "job"
    shutil.copytree(data, moved)
    shutil.copytree(finished, job)
    (job / "summary.json").unlink()  # the job stopped before its summary
    summary = run_job(load_recipe(str(recipe_path)), moved, job)
    before = json.loads((finished / "summary.json").read_text())
    assert summary["oof_macro_f1"] == before["oof_macro_f1"]
    oof = pd.read_csv(job / "oof.csv")
    assert all(p.startswith(str(moved)) for p in oof["path"])


def test_a_lost_checkpoint_of_a_finished_fold_is_named(
    finished: Path, data: Path, recipe_path: Path, tmp_path: Path
):
    import shutil

    job = tmp_path / "job"
    shutil.copytree(finished, job)
    (job / "gender" / "fold1" / "best.pt").unlink()
    with pytest.raises(FastmaskError, match=r"gender/fold1/best\.pt is missing.*delete"):
        run_job(load_recipe(str(recipe_path)), data, job)


def test_run_refuses_bad_data_before_any_work(tmp_path: Path, capsys):
    assert cli.main(["run", "demo", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "expected a data folder holding train/" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_refused_model_does_not_claim_the_out_folder(data: Path, tmp_path: Path, capsys):
    # The model name is checked late (it imports torchvision); a refused recipe must not
    # be recorded in DIR, or the corrected command is refused as "a changed recipe".
    out = tmp_path / "o"
    argv = ["run", "demo", "--data", str(data), "--out", str(out)]
    assert cli.main([*argv, "--set", "model=resnet19"]) == 2
    assert "unknown model 'resnet19'" in capsys.readouterr().err
    assert not (out / "recipe.json").exists()
    from fastmask.run import Job

    Job(load_recipe("demo"), data, out, {}).claim_folder()  # the fixed recipe is accepted


def test_a_weights_file_that_cannot_serve_stops_the_job_before_any_work(
    data: Path, tmp_path: Path, capsys, monkeypatch
):
    # A missing or foreign --set weights file is found when the models are checked, before
    # faces or training (it used to surface only once the first fold built its model).
    import fastmask.faces

    def no_faces(*args, **kwargs):
        raise AssertionError("faces ran before the weights were checked")

    monkeypatch.setattr(fastmask.faces, "detect_faces", no_faces)
    out = tmp_path / "o"
    argv = ["run", "demo", "--data", str(data), "--out", str(out), "--set", "crop=face"]
    missing = tmp_path / "none.pt"
    assert cli.main([*argv, "--set", f"weights={missing}"]) == 2
    assert str(missing) in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    assert cli.main([*argv, "--set", f"weights={foreign}"]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert not (out / "recipe.json").exists()


def test_a_lenient_job_scores_without_the_images_it_left_out(data: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "DATA"
    shutil.copytree(data, copy)
    bad = sorted((copy / "train" / "images").glob("*/mask1.*"))[0]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # fails the header check
    recipe = tmp_path / "lenient.toml"
    recipe.write_text(
        TINY_RECIPE.replace('tasks = ["mask", "gender", "age"]', 'tasks = ["multi"]')
        .replace("tune_bias = true", "tune_bias = false")
        .replace("epochs = 2\nmax_steps = 2", "epochs = 1\nmax_steps = 1\nlenient = true")
    )
    out = tmp_path / "job"
    assert cli.main(["run", str(recipe), "--data", str(copy), "--out", str(out)]) == 0
    oof = pd.read_csv(out / "oof.csv")
    assert str(bad) not in set(oof["path"])
    assert len(oof) == len(build_index(copy).frame) - 1


def test_an_out_folder_that_cannot_be_made_is_named(data: Path, tmp_path: Path, capsys):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "job"  # its parent is a file: works as root too
    assert cli.main(["run", "demo", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "Traceback" not in err


def test_ctrl_c_outside_training_says_how_to_continue(
    data: Path, tmp_path: Path, monkeypatch, capsys
):
    # Ctrl-C while the job predicts or scores: no traceback, status 130, the command again.
    import fastmask.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fastmask.run, "run_job", interrupted)
    out = tmp_path / "job"
    assert cli.main(["run", "demo", "--data", str(data), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"--out {out}" in err and "interrupted" in err


def test_sigterm_outside_training_says_how_to_continue(
    data: Path, tmp_path: Path, monkeypatch, capsys
):
    # A scheduler's SIGTERM while the job predicts: the same message, status 143, and the
    # default handler back afterwards.
    import os
    import signal
    import time

    import fastmask.run

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM was not delivered")

    monkeypatch.setattr(fastmask.run, "run_job", terminated)
    out = tmp_path / "job"
    assert cli.main(["run", "demo", "--data", str(data), "--out", str(out)]) == 143
    err = capsys.readouterr().err
    assert "Traceback" not in err and "SIGTERM" in err and f"--out {out}" in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_bad_eval_images_stop_the_job_before_training(data: Path, tmp_path: Path, capsys):
    # With on_error = "raise", predict would fail on them only after every fold trained.
    import shutil

    copy = tmp_path / "DATA"
    shutil.copytree(data, copy)
    info = pd.read_csv(copy / "eval" / "info.csv")
    (copy / "eval" / "images" / info["ImageID"][0]).unlink()
    bad = copy / "eval" / "images" / info["ImageID"][1]
    bad.write_bytes(bad.read_bytes()[:100])
    out = tmp_path / "job"
    assert cli.main(["run", "demo", "--data", str(copy), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert info["ImageID"][0] in err and str(bad) in err and "on_error" in err
    assert not (out / "multi").exists()


def test_run_takes_lenient_as_the_data_errors_suggest(data: Path, tmp_path: Path, monkeypatch):
    # "Fix them, or pass --lenient": run takes it too, as --set lenient=true.
    import fastmask.run

    seen = {}

    def capture(recipe, *args, **kwargs):
        seen["recipe"] = recipe
        raise FastmaskError("stop here")

    monkeypatch.setattr(fastmask.run, "run_job", capture)
    argv = ["run", "demo", "--data", str(data), "--out", str(tmp_path / "o"), "--lenient"]
    assert cli.main(argv) == 2
    assert seen["recipe"].effective() == load_recipe("demo", ["lenient=true"]).effective()


def test_a_job_stopped_by_bad_data_takes_lenient_on_the_same_out(data: Path, tmp_path: Path):
    # Nothing was trained: following "pass --lenient" must not be refused as a changed recipe.
    import shutil

    from fastmask.run import Job

    copy = tmp_path / "DATA"
    shutil.copytree(data, copy)
    sorted((copy / "train" / "images").glob("*/normal.*"))[0].write_bytes(b"")
    out = tmp_path / "job"
    argv = ["run", "demo", "--data", str(copy), "--out", str(out)]
    assert cli.main(argv) == 2 and (out / "recipe.json").exists()
    Job(load_recipe("demo", ["lenient=true"]), copy, out, {}).claim_folder()
    recorded = json.loads((out / "recipe.json").read_text())["effective"]
    assert recorded["multi.lenient"] is True


def test_suspects_of_a_finished_job(finished: Path, tmp_path: Path):
    out = tmp_path / "suspects"
    assert cli.main(["suspects", str(finished), "--top", "8", "--out", str(out)]) == 0
    table = pd.read_csv(out / "suspects.csv")
    assert len(table) <= 8 and {"task", "person", "given", "suggested", "score"} <= set(table)
    assert table["score"].is_monotonic_decreasing
    if len(table):
        assert (out / "suspects_01.png").read_bytes()[:4] == b"\x89PNG"
    from fastmask.data import load_corrections

    # The shipped corrections the job used are kept; every suggestion is commented out.
    kept = load_corrections(out / "corrections.csv").drop(columns="line")
    assert kept.equals(load_corrections("default").drop(columns="line"))


def test_suspects_needs_folds(tmp_path: Path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({"validation": "holdout"}))
    (tmp_path / "oof.csv").write_text("path\n")
    assert cli.main(["suspects", str(tmp_path)]) == 2
    assert "single split" in capsys.readouterr().err


def test_suspects_warn_when_the_data_changed(finished: Path, data: Path, tmp_path: Path):
    import shutil

    from fastmask.suspects import write_suspects

    moved, job = tmp_path / "DATA", tmp_path / "job"
    shutil.copytree(data, moved)
    shutil.copytree(finished, job)
    summary = json.loads((job / "summary.json").read_text())
    (job / "summary.json").write_text(json.dumps({**summary, "data": str(moved)}))
    assert write_suspects(job, tmp_path / "same")[1] == []
    # Relabel one person: rename the folder (female <-> male) and its train.csv row.
    folder = sorted((moved / "train" / "images").glob("[0-9]*_female_*"))[0]
    folder.rename(folder.with_name(folder.name.replace("_female_", "_male_")))
    csv = moved / "train" / "train.csv"
    pid = folder.name.split("_")[0]
    lines = [
        line.replace(",female,", ",male,").replace("_female_", "_male_")
        if line.startswith(pid + ",") else line
        for line in csv.read_text().splitlines()
    ]  # fmt: skip
    csv.write_text("\n".join(lines) + "\n")
    warnings = write_suspects(job, tmp_path / "changed")[1]
    assert len(warnings) == 1 and "changed after the job trained" in warnings[0]
    assert "7 images added and 7 removed" in warnings[0]


def test_single_split_job_with_face_crop(data: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "DATA"
    shutil.copytree(data, copy)
    recipe = tmp_path / "one.toml"
    recipe.write_text(
        TINY_RECIPE.replace("folds = 2", "folds = 1")
        .replace('tasks = ["mask", "gender", "age"]', 'tasks = ["multi"]')
        .replace("tune_bias = true", "tune_bias = false")
        .replace("epochs = 2", 'epochs = 1\ncrop = "face"\nval_fraction = 0.25')
    )
    out = tmp_path / "job"
    assert cli.main(["run", str(recipe), "--data", str(copy), "--out", str(out)]) == 0
    assert (copy / "faces.csv").exists(), "a face-crop recipe runs faces first"
    assert json.loads((out / "multi" / "config.json").read_text())["crop"] == "face"
    s = json.loads((out / "summary.json").read_text())
    assert s["validation"] == "holdout" and s["folds"] == 1 and s["bias"] is None
    oof = pd.read_csv(out / "oof.csv")
    val_people = json.loads((out / "multi" / "summary.json").read_text())["val_people"]
    assert set(oof["person"]) == set(val_people) and s["oof_images"] == len(oof)
    assert len(pd.read_csv(out / "submission.csv")) == len(pd.read_csv(copy / "eval" / "info.csv"))
