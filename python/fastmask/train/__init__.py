"""Training: `python -m fastmask train {mask,gender,age,multi} --data DATA [options]`.

files -> data index -> native loader -> **trainer** -> predictions -> combine -> CSV

One readable loop in the manner of nanoGPT and timm, in rooms named for their concern:

- `config`: `TrainConfig`, task defaults and checks (no torch; predict reads it too)
- `distributed`: rank, world size and device under torchrun
- `splits`: person-level splits or folds, training rows and their native loaders
- `runtime`: loss, optimiser, learning-rate schedule, CutMix/mixup, AMP
- `loop`: `train_one_epoch`, `train_split` and `train` over folds
- `validation`: scoring the held-out people (always age bands 30/60)
- `runfiles`: checkpoints, metrics.csv, val_predictions.csv, summary.json
- `tracking`: wandb, lazily
- `cli`: the `train` command

A run folder `runs/<task>/<name>/` (or `--out`) receives config.json, metrics.csv (one row
per epoch), summary.json, best.pt, last.pt, val_predictions.csv and confusion.png. Every
random choice of an epoch is drawn from generators seeded by (seed, epoch), so `--resume`
of a killed run reaches the same result as an uninterrupted run.
"""

from fastmask.train.cli import register
from fastmask.train.config import TrainConfig

__all__ = ["TrainConfig", "register"]
