"""Recipes and config files: parsing, defaults, per-task overrides, --set, and refusals."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fastmask import cli
from fastmask.errors import FastmaskError
from fastmask.recipe import load_recipe, recipe_differences, shipped_recipes
from fastmask.train.cli import config_for_args
from fastmask.train.config import config_values, parse_set


def write(tmp_path: Path, text: str, name: str = "r.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_shipped_recipes_load_and_check(tmp_path: Path):
    assert set(shipped_recipes()) >= {"demo", "baseline", "winners"}
    for name in shipped_recipes():
        recipe = load_recipe(name)
        recipe.check_models()
        for task in recipe.tasks:
            assert recipe.task_config(task, tmp_path).folds == recipe.folds
    winners = load_recipe("winners")
    age = winners.task_config("age", tmp_path)
    assert (age.age_bounds, age.crop, age.loss, age.loss_weights) == (
        (30, 58), "face", "focal+f1", (0.6, 0.4)
    )  # fmt: skip
    assert age.label_smoothing > 0 and age.cutmix > 0 and age.oversample == "balanced"
    assert winners.folds == 5 and winners.predict["tta"] and winners.crops_to_faces
    baseline = load_recipe("baseline")
    models = {t: baseline.task_config(t, tmp_path).model for t in baseline.tasks}
    assert models == {"mask": "efficientnet_b0", "gender": "efficientnet_b3", "age": "resnet152"}
    assert baseline.folds == 1 and baseline.task_config("age", tmp_path).oversample == "balanced"


def test_defaults_overrides_and_set(tmp_path: Path):
    path = write(
        tmp_path,
        """
        tasks = ["mask", "gender", "age"]
        folds = 3
        [train]
        model = "resnet18"
        lr = 1e-3
        image-size = 64
        [age]
        lr = 3e-4
        drop_ages = "27-29"
        """,
    )
    recipe = load_recipe(path)
    mask, age = recipe.task_config("mask", tmp_path), recipe.task_config("age", tmp_path)
    assert (mask.lr, age.lr, mask.image_size, age.drop_ages) == (1e-3, 3e-4, (64, 64), ((27, 29),))
    # Task defaults still apply where the recipe is silent.
    assert mask.augment == "mask" and age.oversample == "balanced" and mask.oversample == "none"
    assert recipe.effective()["gender.lr"] == 1e-3
    changed = load_recipe(path, ["epochs=2", "age.lr=0.01", "folds=4", "tune_bias=true"])
    assert changed.task_config("mask", tmp_path).epochs == 2
    assert changed.task_config("age", tmp_path).lr == 0.01 and changed.folds == 4
    assert changed.tune_bias
    differ = recipe_differences(recipe.effective(), changed.effective())
    assert "age.lr" in differ and "folds" in differ and "mask.epochs" in differ
    assert "mask.lr" not in differ


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepoch = 3\n", r"unknown key 'epoch'; did you mean 'epochs'"),
        ('tasks = ["mask", "gender"]\n', r"do not cover mask, gender and age"),
        ('tasks = ["multi", "age"]\n', r"do not cover mask, gender and age"),
        ('tasks = ["mask", "gender", "agee"]\n', r"unknown key 'agee'; did you mean 'age'"),
        ("[train]\nlr = -1.0\n", r"--lr must be > 0"),
        ('[train]\nlr = "fast"\n', r"lr = 'fast': expected a number"),
        ("[train]\nfolds = 3\n", r"folds.*belong at the top"),
        ('[train]\noptimizer = "adamm"\n', r"--optimizer 'adamm'"),
        ("[mask]\nlimit = 3\n", r"limit must be the same for every task"),
        ("[multi]\nepochs = 1\n", r"\[multi\] is given but tasks are"),
        ("[predict]\nttta = true\n", r"unknown key 'ttta'; did you mean 'tta'"),
        ('[predict]\ncheckpoint = "worst"\n', r"checkpoint must be best or last"),
        ("folds = 0\n", r"folds = 0"),
        ("[trian]\nlr = 1.0\n", r"unknown key 'trian'; did you mean 'train'"),
    ],
)
def test_bad_recipes_are_refused_naming_the_key(tmp_path: Path, text: str, message: str):
    with pytest.raises(FastmaskError, match=message):
        load_recipe(write(tmp_path, text))


def test_toml_syntax_error_names_file_and_line(tmp_path: Path):
    path = write(tmp_path, "folds = 3\n[train]\nlr = = 1\n", "broken.toml")
    with pytest.raises(FastmaskError, match=r"broken\.toml: TOML syntax error.*line 3"):
        load_recipe(path)


def test_a_folder_named_like_a_shipped_recipe_does_not_hide_it(tmp_path: Path, monkeypatch):
    (tmp_path / "demo").mkdir()  # `make demo` writes ./demo
    monkeypatch.chdir(tmp_path)
    assert load_recipe("demo").name == "demo"


def test_unknown_recipe_and_model_are_refused(tmp_path: Path):
    with pytest.raises(FastmaskError, match="did you mean 'demo'"):
        load_recipe("dmeo")
    recipe = load_recipe("demo", ["model=resnet19"])
    with pytest.raises(FastmaskError, match="unknown model 'resnet19'; did you mean 'resnet18'"):
        recipe.check_models()


def test_a_negative_seed_is_refused_before_any_work():
    with pytest.raises(FastmaskError, match=r"demo: seed = -1: expected a whole number >= 0"):
        load_recipe("demo", ["seed=-1"])
    with pytest.raises(FastmaskError, match=r"--seed must be >= 0, got -1"):
        config_for_args(train_args("age", "--data", "DATA", "--seed", "-1"))


def test_set_values_are_read_as_toml():
    assert parse_set(["epochs=3", "model=resnet18", "image_size=[96, 80]", "cache=true"]) == {
        "epochs": 3,
        "model": "resnet18",
        "image_size": [96, 80],
        "cache": True,
    }
    with pytest.raises(FastmaskError, match="expected key=value"):
        parse_set(["epochs"])
    assert config_values({"no-pretrained": True}, "x") == {"pretrained": False}


def train_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["train", *argv])


def test_train_config_file_and_set_flags_win(tmp_path: Path):
    config = write(tmp_path, 'model = "resnet18"\nepochs = 7\nlr = 0.01\nbatch-size = 8\n')
    args = train_args("age", "--data", str(tmp_path), "--config", config, "--set", "lr=0.02",
                      "--epochs", "3", "--out", str(tmp_path / "run"))  # fmt: skip
    c, run_dir = config_for_args(args)
    assert (c.model, c.epochs, c.lr, c.batch_size) == ("resnet18", 3, 0.02, 8)
    assert run_dir == tmp_path / "run"
    bad = write(tmp_path, "epochz = 7\n", "bad.toml")
    with pytest.raises(FastmaskError, match=r"bad\.toml: unknown key 'epochz'; did you mean"):
        config_for_args(train_args("age", "--data", str(tmp_path), "--config", bad))
