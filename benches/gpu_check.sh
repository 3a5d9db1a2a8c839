#!/usr/bin/env bash
# The prepared GPU check, one command of at most 8 minutes on a CUDA machine:
#   bash benches/gpu_check.sh [--wheel dist/fastmask-*.whl]
#       writes benches/results/gpu_check_<gpu>.json and the README's GPU table
#   bash benches/gpu_check.sh --dry-run   # the same steps on the CPU, tiny (what the tests run)
# Steps and checks: benches/gpu_check.py. Python: $PY, else .venv/bin/python, else python3 (a
# GPU machine has no .venv: its python3 holds torch). With --wheel (or, when fastmask does not
# import, the one dist/fastmask-*.whl) the abi3 wheel is installed offline into a temporary
# folder on PYTHONPATH: --no-deps --no-index, so torch & co. are the machine's own, never fetched.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)  # paths given as arguments stay relative to the caller
if [[ -z "${PY:-}" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then PY=$root/.venv/bin/python; else PY=python3; fi
fi
export WANDB_MODE=disabled PYTHONUNBUFFERED=1

wheel=""
args=()
while (($#)); do
    case "$1" in
        --wheel) wheel=${2:?--wheel needs a path}; shift 2 ;;
        --wheel=*) wheel=${1#--wheel=}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
if [[ -z "$wheel" ]] && ! "$PY" -c "import fastmask._native" 2>/dev/null; then
    shopt -s nullglob
    found=("$root"/dist/fastmask-*.whl)
    shopt -u nullglob
    if ((${#found[@]} == 1)); then wheel=${found[0]}; fi
fi
if [[ -n "$wheel" ]]; then
    site=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")
    echo "gpu_check: installing $wheel into $site (offline, no dependencies)"
    "$PY" -m pip install -q --no-deps --no-index --no-compile --no-cache-dir \
        --disable-pip-version-check --target "$site" "$wheel"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import fastmask._native" 2>/dev/null; then
    echo "gpu_check: $PY cannot import fastmask; pass --wheel dist/fastmask-*.whl (make wheel)," \
        "or PYTHONPATH=python with python/fastmask/_native.abi3.so built for this machine" >&2
    exit 2
fi
# SIGINT at 480 s lets gpu_check.py write what it has; SIGKILL 20 s later if it does not stop.
exec timeout --signal=INT --kill-after=20 "${GPU_CHECK_TIMEOUT:-480}" "$PY" "$root/benches/gpu_check.py" ${args[@]+"${args[@]}"}
