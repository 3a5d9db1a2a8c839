"""Experiment tracking: wandb, imported lazily; offline without an API key, never fatal."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fastmask.train.config import TrainConfig

log = logging.getLogger(__name__)


def wandb_mode(requested: str | None) -> str:
    """--wandb, else WANDB_MODE, else online with an API key and offline without."""
    mode = requested or os.environ.get("WANDB_MODE") or ""
    if mode in ("online", "offline", "disabled"):
        if mode == "online" and not os.environ.get("WANDB_API_KEY"):
            try:
                import wandb

                logged_in = bool(wandb.api.api_key)
            except Exception:  # noqa: BLE001 - no wandb or no login: offline it is
                logged_in = False
            if not logged_in:
                log.warning("wandb online needs WANDB_API_KEY or `wandb login`; logging offline")
                return "offline"
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class Tracker:
    """wandb run when available and enabled; every method is a no-op otherwise."""

    def __init__(self, c: TrainConfig, run_dir: Path, enabled: bool) -> None:
        self.run: Any = None
        mode = wandb_mode(c.wandb)
        if not enabled or mode == "disabled":
            return
        try:
            import wandb
        except ImportError:
            log.warning("wandb is not installed (pip install wandb); metrics go to local files")
            return
        try:
            self.run = wandb.init(
                project=c.wandb_project,
                name=f"{c.task}/{run_dir.name}",
                dir=str(run_dir),
                config=c.to_json(),
                mode=mode,
                reinit=True,
            )
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            log.warning("wandb could not start (%s); metrics go to local files", err)

    def log(self, row: dict[str, Any], image: Path | None = None) -> None:
        if self.run is None:
            return
        import wandb

        data = {k: v for k, v in row.items() if isinstance(v, int | float)}
        if image is not None and image.exists():
            data["confusion"] = wandb.Image(str(image))
        self.run.log(data, step=int(row["epoch"]))

    def finish(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        for key in ("best_epoch", "best_macro_f1", "images_per_s", "wall_s"):
            self.run.summary[key] = summary.get(key)
        self.run.finish()
