"""Recipes: the whole job of `fastmask run` in one TOML file, checked before any work starts.

A recipe names the tasks (the three task models, or one `multi` model), the person-level
folds shared by every task, the settings each task trains with (`[train]` for all, `[mask]`,
`[gender]`, `[age]` or `[multi]` to override per task; keys are the `train` flags' names),
the face detector used when a task crops to faces, predict settings, and whether to tune
class biases on the out-of-fold probabilities. Shipped recipes live in
`fastmask/recipes/*.toml` and are named without the suffix (`demo`, `baseline`, `winners`).

```toml
description = "..."
tasks = ["mask", "gender", "age"]
folds = 5
seed = 0
tune_bias = false

[train]
model = "resnet18"
epochs = 4

[age]
oversample = "balanced"

[faces]
detector = "haar-eyes"

[predict]
tta = true
checkpoint = "best"
```
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastmask.errors import FastmaskError
from fastmask.schema import MULTI, TASKS, TRAIN_TASKS
from fastmask.train.config import (
    TrainConfig,
    config_values,
    load_toml_module,
    parse_set,
    read_toml,
    resolve_config,
    unknown_key_message,
)

TOP_KEYS = ("description", "tasks", "folds", "seed", "tune_bias")
SECTIONS = ("train", *TRAIN_TASKS, "faces", "predict")
PREDICT_DEFAULTS: dict[str, Any] = {
    "tta": True,
    "checkpoint": "best",
    "batch_size": 64,
    # "fallback": an unreadable eval image gets the prior's class instead of failing the job.
    "on_error": "raise",
}
FACES_DEFAULTS: dict[str, Any] = {"detector": "", "workers": 0}
# Set once for the job: every task's folds must hold the same people, so OOF rows line up.
JOB_ONLY = ("folds", "seed", "data", "name", "limit", "corrections")
# Settings that change how fast a run goes, never what it computes: free to differ on resume.
RUNTIME_KEYS = ("threads", "torch_threads", "device", "wandb", "wandb_project", "prefetch")


def shipped_recipes() -> list[str]:
    """Names of the recipes inside the package."""
    folder = resources.files("fastmask") / "recipes"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def recipe_source(name_or_path: str) -> tuple[str, dict[str, Any], str]:
    """(name, parsed TOML, text) of a shipped recipe name or a TOML file path."""
    path = Path(name_or_path)
    # A file wins; a folder of the same name as a shipped recipe (e.g. ./demo) does not.
    if name_or_path.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise FastmaskError(f"recipe {path}: no such file")
        return path.stem, read_toml(path), path.read_text()
    shipped = shipped_recipes()
    if name_or_path not in shipped:
        raise FastmaskError(
            unknown_key_message(name_or_path, shipped, "recipe").replace("key", "recipe")
            + " (or give the path of a .toml file)"
        )
    text = (resources.files("fastmask") / "recipes" / f"{name_or_path}.toml").read_text()
    try:
        parsed = load_toml_module().loads(text)
    except load_toml_module().TOMLDecodeError as err:  # pragma: no cover - shipped files
        raise FastmaskError(f"shipped recipe {name_or_path}: TOML syntax error: {err}") from err
    return name_or_path, dict(parsed), text


@dataclass(frozen=True)
class Recipe:
    """A checked recipe: what `fastmask run` does, with every value resolved."""

    name: str
    description: str
    tasks: tuple[str, ...]
    folds: int
    seed: int
    tune_bias: bool
    train: dict[str, Any]
    overrides: dict[str, dict[str, Any]]
    faces: dict[str, Any]
    predict: dict[str, Any]
    text: str = field(default="", compare=False)
    data_settings: dict[str, Any] = field(default_factory=dict)

    def task_config(
        self, task: str, data: str | Path, check_model: bool = False, **runtime: Any
    ) -> TrainConfig:
        """The TrainConfig of `task`, checked as `train` checks its flags (the model name
        only with `check_model`: it imports torchvision, seconds a finished job need not)."""
        values = {**self.train, **self.overrides.get(task, {}), **self.data_settings, **runtime}
        values.update(folds=self.folds, seed=self.seed, data=str(data))
        return resolve_config(task, values, check_model)

    def check_models(self) -> None:
        from fastmask.train.config import check_model_name

        for task in self.tasks:
            try:
                check_model_name(self.task_config(task, "DATA").model)
            except FastmaskError as err:
                raise FastmaskError(f"recipe {self.name} [{task}]: {err}") from err

    def check_weights(self, started: Collection[str] = ()) -> None:
        """Build each task's model once, as training will: a pretrained download that fails
        offline, or a `weights` file that is missing or does not fit, stops the job before
        face detection and training, not after. Tasks in `started` (every fold has a
        last.pt, which holds the weights) are not checked."""
        from fastmask.models import build_model

        built = set()
        for task in self.tasks:
            if task in started:
                continue
            c = self.task_config(task, "DATA")
            key = (c.model, task, c.pretrained, c.weights)
            if key in built:
                continue
            try:
                build_model(c.model, task, pretrained=c.pretrained, weights=c.weights)
            except FastmaskError as err:
                raise FastmaskError(f"recipe {self.name} [{task}]: {err}") from err
            built.add(key)

    @property
    def crops_to_faces(self) -> bool:
        return any(
            {**self.train, **self.overrides.get(t, {})}.get("crop", "center") != "center"
            for t in self.tasks
        )

    def effective(self, data: str | Path = "DATA") -> dict[str, Any]:
        """Flat {key: value} of everything the job computes with, defaults included:
        `folds`, `mask.lr`, `predict.tta`, ... Runtime-only settings are left out."""
        flat: dict[str, Any] = {
            "tasks": list(self.tasks),
            "folds": self.folds,
            "seed": self.seed,
            "tune_bias": self.tune_bias,
        }
        for task in self.tasks:
            config = self.task_config(task, data).to_json()
            for key, value in config.items():
                if key not in RUNTIME_KEYS and key not in ("task", "data", "name"):
                    flat[f"{task}.{key}"] = value
        flat.update({f"predict.{k}": v for k, v in self.predict.items()})
        if self.crops_to_faces:
            flat.update({f"faces.{k}": v for k, v in self.faces.items() if k != "workers"})
        return json.loads(json.dumps(flat))

    def fingerprint(self) -> str:
        blob = json.dumps(self.effective(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """`--set age.epochs=5` into tree["age"]["epochs"]; a bare key is top-level or [train]."""
    parts = dotted.split(".")
    if len(parts) == 1:
        key = parts[0].replace("-", "_")
        target = tree if key in TOP_KEYS else tree.setdefault("train", {})
        target[key] = value
        return
    if len(parts) != 2:
        raise FastmaskError(f"--set {dotted}: expected KEY or SECTION.KEY, e.g. age.epochs")
    section, key = parts
    if section not in SECTIONS:
        raise FastmaskError(unknown_key_message(section, list(SECTIONS), f"--set {dotted}"))
    node = tree.setdefault(section, {})
    if not isinstance(node, dict):
        raise FastmaskError(f"--set {dotted}: {section} is not a table")
    node[key] = value


def _section(raw: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise FastmaskError(f"{where}: [{name}] must be a table of settings")
    return dict(value)


def _checked_settings(values: dict[str, Any], where: str) -> dict[str, Any]:
    settings = config_values(values, where)
    refused = sorted(k for k in settings if k in JOB_ONLY and k not in ("limit", "corrections"))
    if refused:
        raise FastmaskError(
            f"{where}: {', '.join(refused)} belong at the top of the recipe (folds, seed) or "
            "come from `fastmask run --data`; every task shares them"
        )
    return settings


def _checked_plain(values: dict[str, Any], defaults: dict[str, Any], where: str) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in defaults:
            raise FastmaskError(unknown_key_message(key, list(defaults), where))
        expected = type(defaults[name])
        if type(value) is not expected:
            raise FastmaskError(f"{where}: {name} = {value!r}: expected {expected.__name__}")
        out[name] = value
    return out


def load_recipe(name_or_path: str, sets: list[str] | None = None) -> Recipe:
    """Read, override (`--set`) and check a recipe; every error names the key and where."""
    name, raw, text = recipe_source(name_or_path)
    where = f"recipe {name_or_path}"
    for dotted, value in parse_set(sets).items():
        _set_path(raw, dotted, value)
    for key in raw:
        if key not in TOP_KEYS and key not in SECTIONS:
            raise FastmaskError(unknown_key_message(key, [*TOP_KEYS, *SECTIONS], where))
    tasks = raw.get("tasks", list(TASKS))
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise FastmaskError(f'{where}: tasks must be a list like ["mask", "gender", "age"]')
    for t in tasks:
        if t not in TRAIN_TASKS:
            raise FastmaskError(unknown_key_message(t, list(TRAIN_TASKS), f"{where}: tasks"))
    if sorted(tasks) != sorted(TASKS) and tasks != [MULTI]:
        raise FastmaskError(
            f"{where}: tasks {tasks} do not cover mask, gender and age once each: give "
            '["mask", "gender", "age"] (three models) or ["multi"] (one model)'
        )
    checks = {"folds": int, "seed": int, "tune_bias": bool, "description": str}
    for key, kind in checks.items():
        if key in raw and type(raw[key]) is not kind:
            raise FastmaskError(f"{where}: {key} = {raw[key]!r}: expected {kind.__name__}")
    folds = int(raw.get("folds", 5))
    if folds < 1:
        raise FastmaskError(
            f"{where}: folds = {folds}: expected 1 (one split) or K >= 2 person-level folds"
        )
    if int(raw.get("seed", 0)) < 0:
        raise FastmaskError(f"{where}: seed = {raw['seed']}: expected a whole number >= 0")
    train = _checked_settings(_section(raw, "train", where), f"{where} [train]")
    data_settings: dict[str, Any] = {
        k: train.pop(k) for k in ("limit", "corrections") if k in train
    }
    overrides = {}
    for task in TRAIN_TASKS:
        section = _section(raw, task, where)
        if section and task not in tasks:
            raise FastmaskError(f"{where}: [{task}] is given but tasks are {tasks}")
        settings = _checked_settings(section, f"{where} [{task}]")
        shared = sorted(k for k in settings if k in ("limit", "corrections"))
        if shared:
            raise FastmaskError(
                f"{where} [{task}]: {', '.join(shared)} must be the same for every task "
                "(set it in [train])"
            )
        overrides[task] = settings
    recipe = Recipe(
        name=name,
        description=str(raw.get("description", "")),
        tasks=tuple(tasks),
        folds=folds,
        seed=int(raw.get("seed", 0)),
        tune_bias=bool(raw.get("tune_bias", False)),
        train=train,
        overrides={t: o for t, o in overrides.items() if o},
        faces=_checked_plain(_section(raw, "faces", where), FACES_DEFAULTS, f"{where} [faces]"),
        predict=_checked_plain(
            _section(raw, "predict", where), PREDICT_DEFAULTS, f"{where} [predict]"
        ),
        text=text,
        data_settings=data_settings,
    )
    check_recipe(recipe, where)
    return recipe


def check_recipe(recipe: Recipe, where: str) -> None:
    """Every task's settings as `train` checks its flags, and the predict/faces values."""
    for task in recipe.tasks:
        try:
            recipe.task_config(task, "DATA")
        except FastmaskError as err:
            raise FastmaskError(f"{where} [{task}]: {err}") from err
    if recipe.predict["checkpoint"] not in ("best", "last"):
        raise FastmaskError(f"{where} [predict]: checkpoint must be best or last")
    if recipe.predict["batch_size"] < 1:
        raise FastmaskError(f"{where} [predict]: batch_size must be >= 1")
    if recipe.predict["on_error"] not in ("raise", "fallback"):
        raise FastmaskError(f"{where} [predict]: on_error must be raise or fallback")
    if recipe.crops_to_faces and recipe.faces["detector"]:
        from fastmask.faces import DETECTORS

        if recipe.faces["detector"] not in DETECTORS:
            raise FastmaskError(
                unknown_key_message(recipe.faces["detector"], list(DETECTORS), where).replace(
                    "key", "detector"
                )
            )


def recipe_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two `Recipe.effective()` dicts, sorted."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
