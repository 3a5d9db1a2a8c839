#!/usr/bin/env bash
# Usage: fuzz/run.sh TARGET SECONDS [extra libFuzzer flags...]
# One job, ASan + debug assertions, on the stable toolchain (RUSTC_BOOTSTRAP=1 lets it take
# cargo-fuzz's -Z flags). Seeds the corpus first; the log goes to fuzz/logs/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?target: decode, roi, exif or augment}
secs=${2:-300}
shift 2 || true
./seed.sh >/dev/null
case "$target" in
    decode | roi) len=65536 ;;
    *) len=4096 ;;
esac
mkdir -p logs
export RUSTC_BOOTSTRAP=1
cargo fuzz build -a "$target"
cargo fuzz run -a "$target" corpus/"$target" -- \
    -max_len="$len" -rss_limit_mb=2048 -timeout=10 -max_total_time="$secs" \
    -print_final_stats=1 "$@" >logs/"$target".log 2>&1 || {
    rc=$?
    grep -m1 -A12 -E "=== panic escaped|ERROR: (libFuzzer|AddressSanitizer)" logs/"$target".log || true
    grep -E "^artifact_prefix|Test unit written" logs/"$target".log || true
    exit "$rc"
}
grep -E "^stat::|^Done" logs/"$target".log
