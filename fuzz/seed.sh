#!/usr/bin/env bash
# Fill fuzz/corpus/<target>/ with seeds: the image fixtures (tests/data, tests/data/fuzz)
# for `decode` (and, behind a region, for `roi`), and the tiny committed seeds in
# fuzz/seeds/<target>/. Idempotent; the corpus directories are git-ignored and grow as
# libFuzzer adds inputs to them.
set -euo pipefail
cd "$(dirname "$0")"
data=../tests/data
mkdir -p corpus/decode corpus/exif corpus/augment corpus/roi
for f in "$data"/*.jpg "$data"/*.png "$data"/ref/*.png "$data"/fuzz/*; do
    [ -f "$f" ] && cp -f "$f" corpus/decode/
done
# `roi` reads a region (4 bytes) before the file: the JPEG fixtures under a few regions.
for f in "$data"/*.jpg; do
    for r in '\x00\xcc\x19\xb3' '\x33\x99\x00\x66' '\x00\x01\xc0\xff'; do
        { printf "$r"; cat "$f"; } >corpus/roi/"$(basename "$f" .jpg)_${r//\\x/}.bin"
    done
done
for t in decode exif augment; do
    cp -f seeds/"$t"/* corpus/"$t"/
done
# The TIFF blocks of the EXIF fixtures (APP1 payload after "Exif\0\0") seed `exif`.
python3 - "$data" corpus/exif <<'PY'
import pathlib, struct, sys
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for jpg in sorted(src.glob("exif_*.jpg")):
    b, i = jpg.read_bytes(), 2
    while i + 4 <= len(b) and b[i] == 0xFF:
        marker, length = b[i + 1], struct.unpack(">H", b[i + 2:i + 4])[0]
        seg = b[i + 4:i + 2 + length]
        if marker == 0xE1 and seg.startswith(b"Exif\0\0"):
            (dst / (jpg.stem + ".tiff")).write_bytes(seg[6:])
            break
        i += 2 + length
PY
for t in decode exif augment roi; do
    echo "corpus/$t: $(ls corpus/$t | wc -l) files"
done
