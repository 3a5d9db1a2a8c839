#!/usr/bin/env bash
# The prepared GPU check, one command of at most 8 minutes on a CUDA machine:
#   benches/gpu_check.sh            # writes benches/results/gpu_check_<gpu>.json + README table
#   benches/gpu_check.sh --dry-run  # the same steps on the CPU, tiny (what the tests run)
# Steps and checks: benches/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export WANDB_MODE=disabled
exec timeout --signal=INT --kill-after=20 480 "$PY" benches/gpu_check.py "$@"
