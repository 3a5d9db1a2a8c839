"""Models: any torchvision classifier by name with its head fitted to the task, or one backbone
with three heads (`MultiHead`) for mask, gender and age.

ImageNet weights come from torchvision's download by default; offline, a FastmaskError says
how to go on (`--no-pretrained` or `--weights PATH`). A local weights file may be a plain state
dict or a fastmask checkpoint; the backbone loads strictly, the head only when shapes fit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fastmask.data import NUM_CLASSES, TASKS
from fastmask.errors import FastmaskError

log = logging.getLogger(__name__)

# Models whose auxiliary classifiers would change the training output into a tuple.
_AUX_LOGIT_MODELS = ("googlenet", "inception_v3")


def available_models() -> list[str]:
    """Names torchvision can build as image classifiers."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def head_name(model: nn.Module) -> str:
    """Dotted name of the classifier head: the last nn.Linear (or squeezenet's final conv)."""
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linear:
        return linear[-1]
    conv = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if conv and conv[-1].startswith("classifier"):
        return conv[-1]
    raise FastmaskError(f"{type(model).__name__} has no linear classifier head to replace")


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def replace_head(model: nn.Module, num_classes: int) -> str:
    """Swap the classifier head for a fresh one with `num_classes` outputs; returns its name."""
    name = head_name(model)
    old = model.get_submodule(name)
    new: nn.Module
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes)
    else:
        assert isinstance(old, nn.Conv2d)
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
    _set_module(model, name, new)
    return name


def build_backbone(name: str, pretrained: bool) -> nn.Module:
    """A torchvision classifier with its ImageNet head (1000 classes)."""
    import torchvision

    if name not in available_models():
        raise FastmaskError(
            f"unknown model {name!r}; torchvision offers e.g. resnet18, efficientnet_b0, "
            "convnext_tiny (see torchvision.models.list_models())"
        )
    kwargs: dict[str, Any] = {"aux_logits": False} if name in _AUX_LOGIT_MODELS else {}
    if not pretrained:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    try:
        return torchvision.models.get_model(name, weights="DEFAULT", **kwargs)
    except OSError as err:  # URLError, socket and file errors: the weights could not be had
        raise FastmaskError(
            f"cannot get the ImageNet weights of {name} ({err}). Offline? Pass --no-pretrained "
            "to start from random weights, or --weights PATH to load a local state dict "
            "(fastmask run: --set pretrained=false or --set weights=PATH; "
            f"torchvision caches downloads in {torch.hub.get_dir()})."
        ) from err


class MultiHead(nn.Module):
    """One backbone, three linear heads; forward returns {'mask', 'gender', 'age'} logits."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        name = head_name(backbone)
        old = backbone.get_submodule(name)
        if not isinstance(old, nn.Linear):
            raise FastmaskError(f"{type(backbone).__name__} has no linear head to share")
        _set_module(backbone, name, nn.Identity())
        self.backbone = backbone
        self.backbone_head = name
        self.heads = nn.ModuleDict({t: nn.Linear(old.in_features, NUM_CLASSES[t]) for t in TASKS})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}


def build_model(
    name: str,
    task: str,
    *,
    pretrained: bool = True,
    weights: str | Path | None = None,
) -> nn.Module:
    """The model for `task` ('mask', 'gender', 'age' or 'multi'), head fitted to its classes.

    `weights` (a local file) wins over `pretrained` and needs no network.
    """
    backbone = build_backbone(name, pretrained=pretrained and weights is None)
    if task == "multi":
        model: nn.Module = MultiHead(backbone)
    elif task in NUM_CLASSES:
        replace_head(backbone, NUM_CLASSES[task])
        model = backbone
    else:
        raise FastmaskError(f"unknown task {task!r}; expected mask, gender, age or multi")
    if weights is not None:
        load_weights(model, weights)
    return model


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes that belong to the task head(s) of a model from `build_model`."""
    if isinstance(model, MultiHead):
        return ("heads.", f"backbone.{model.backbone_head}.")
    return (f"{head_name(model)}.",)


def load_torch_file(path: str | Path, what: str) -> Any:
    """torch.load on the CPU, tensors only; a file that is not one is a FastmaskError naming
    it as the `what` it should be."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        # A file that is not a torch file fails inside the unpickler with whatever its bytes
        # trigger (UnpicklingError, KeyError, EOFError, ...): all mean "not readable".
        reason = str(err) or type(err).__name__
        raise FastmaskError(f"cannot read {what} {path}: {reason}") from err


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a file: plain, or a checkpoint's 'model' / 'state_dict' entry."""
    obj = load_torch_file(path, "weights file")
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise FastmaskError(f"{path} holds no state dict (expected name -> tensor)")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        # DDP and torch.compile wrap names; a file saved from either still loads.
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict: every backbone tensor must match; heads load when shapes fit."""
    state = read_state_dict(path)
    target = model.state_dict()
    if isinstance(model, MultiHead) and not any(k.startswith("backbone.") for k in state):
        state = {f"backbone.{k}": v for k, v in state.items()}
    heads = head_prefixes(model)
    is_head = lambda key: key.startswith(heads)  # noqa: E731 - a local predicate
    backbone_target = {k for k in target if not is_head(k)}
    backbone_state = {k for k in state if not is_head(k)}
    missing = sorted(backbone_target - backbone_state)
    unexpected = sorted(backbone_state - backbone_target)
    wrong = sorted(k for k in backbone_target & backbone_state if state[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        parts = [
            f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        ]
        raise FastmaskError(
            f"{path} does not fit {type(model).__name__} ({'; '.join(parts)}); was it saved "
            "from the same --model?"
        )
    merged = dict(target)
    merged.update({k: state[k] for k in backbone_target})
    loaded_head = [k for k in target if is_head(k) and k in state]
    fits = all(state[k].shape == target[k].shape for k in loaded_head)
    if loaded_head and fits:
        merged.update({k: state[k] for k in loaded_head})
    else:
        log.info("head of %s not loaded (other classes); starting it fresh", path)
    model.load_state_dict(merged, strict=True)
