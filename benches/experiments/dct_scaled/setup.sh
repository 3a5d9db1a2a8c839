#!/usr/bin/env bash
# Copy zune-jpeg 0.5.15 from cargo's registry (there once fastmask has been built), apply the
# planar + scaled-IDCT patch, then build and run the measurement on the JPEGs listed in LIST.
#   benches/experiments/dct_scaled/setup.sh LIST_OF_JPEG_PATHS [PASSES] [SCALE_N]
set -euo pipefail
cd "$(dirname "$0")"
if [[ ! -d zune-jpeg ]]; then
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/zune-jpeg-0.5.15 | head -1)
    cp -r "$src" zune-jpeg
    (cd zune-jpeg && patch -p1 < ../zune-dct-scaled.diff)
fi
cargo run --release -- "${1:?a file with one JPEG path per line}" "${2:-5}" ${3:+"$3"}
