"""Write the small image fixtures shared by the Rust unit tests, and reference.json.

Run from anywhere: `.venv/bin/python tests/data/make_fixtures.py`. Output is deterministic
for a given Pillow/libjpeg-turbo; the files are committed so tests need no Python.

reference.json holds, for each decodable fixture, PIL's decode (exif_transpose applied for
the EXIF ones, then convert("RGB")): size, mean per channel and an FNV-1a hash of the raw
RGB bytes; the same pixels are stored losslessly as ref/<name>.png so Rust tests can compare
pixel by pixel (the hash proves the reference PNG decodes to exactly PIL's bytes).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

HERE = Path(__file__).resolve().parent
REF = HERE / "ref"
W, H = 48, 64


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def pattern(w: int = W, h: int = H) -> np.ndarray:
    """Smooth gradients plus three 8-aligned blocks: asymmetric under every flip/rotation."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = 40 + 160 * x / max(w - 1, 1)
    img[..., 1] = 40 + 160 * y / max(h - 1, 1)
    img[..., 2] = 120 + 60 * np.sin(x / 7.0 + y / 11.0)
    img[0:16, 0:16] = (220, 40, 40)  # red block top-left
    img[0:32, 32:40] = (250, 250, 250)  # white stripe top-right
    img[h - 24 : h, w - 16 : w] = (30, 200, 60)  # green block bottom-right
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def rgb(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr, "RGB")


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def png_rgb16(arr16: np.ndarray) -> bytes:
    """Pillow cannot write 16-bit RGB PNGs, so write one by hand (filter 0 on every row)."""
    h, w, _ = arr16.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + arr16[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def exif_big_endian(orientation: int) -> bytes:
    """An APP1 Exif segment in Motorola byte order (Pillow writes Intel order)."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def photo(w: int = 384, h: int = 512) -> Image.Image:
    """A photo-like 384x512 image: smooth background, a face-like ellipse, shapes, noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = np.empty((h, w, 3), np.float32)
    bg[..., 0] = 90 + 80 * x / w
    bg[..., 1] = 110 + 60 * y / h
    bg[..., 2] = 150 - 50 * (x + y) / (w + h)
    im = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    d.ellipse((100, 80, 284, 330), fill=(214, 170, 140))  # face
    d.ellipse((90, 50, 294, 170), fill=(40, 30, 25))  # hair
    d.ellipse((145, 180, 175, 200), fill=(60, 50, 50))  # eyes
    d.ellipse((210, 180, 240, 200), fill=(60, 50, 50))
    d.rectangle((120, 240, 264, 320), fill=(120, 170, 220))  # mask
    d.polygon([(0, 512), (60, 380), (324, 380), (384, 512)], fill=(60, 60, 110))  # shoulders
    im = im.filter(ImageFilter.GaussianBlur(2.0))
    arr = np.asarray(im).astype(np.float32) + rng.normal(0, 5, (h, w, 3))
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def main() -> None:
    REF.mkdir(exist_ok=True)
    base = rgb(pattern())
    files: dict[str, bytes] = {}

    # JPEG: every sampling, progressive, grayscale, CMYK (Pillow writes Adobe-inverted), restarts
    files["jpeg_420.jpg"] = jpeg_bytes(base, quality=92, subsampling="4:2:0")
    files["jpeg_422.jpg"] = jpeg_bytes(base, quality=92, subsampling="4:2:2")
    files["jpeg_444.jpg"] = jpeg_bytes(base, quality=92, subsampling="4:4:4")
    files["jpeg_progressive.jpg"] = jpeg_bytes(
        base, quality=92, subsampling="4:2:0", progressive=True
    )
    files["jpeg_progressive_444.jpg"] = jpeg_bytes(
        base, quality=92, subsampling="4:4:4", progressive=True
    )
    files["jpeg_gray.jpg"] = jpeg_bytes(base.convert("L"), quality=92)
    files["jpeg_cmyk.jpg"] = jpeg_bytes(base.convert("CMYK"), quality=92)
    files["jpeg_restart.jpg"] = jpeg_bytes(
        base, quality=92, subsampling="4:2:0", restart_marker_blocks=2
    )
    files["jpeg_restart_rows.jpg"] = jpeg_bytes(
        base, quality=92, subsampling="4:2:2", restart_marker_rows=1
    )
    files["jpeg_progressive_restart.jpg"] = jpeg_bytes(
        base, quality=92, subsampling="4:2:0", progressive=True, restart_marker_blocks=3
    )
    # Partial MCUs at the right and bottom edges.
    files["jpeg_odd_420.jpg"] = jpeg_bytes(rgb(pattern(45, 61)), quality=92, subsampling="4:2:0")

    # EXIF orientation 1..8 (Pillow writes little-endian), plus two in big-endian order.
    for k in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = k
        files[f"exif_{k}.jpg"] = jpeg_bytes(
            base, quality=92, subsampling="4:2:0", exif=exif.tobytes()
        )
    plain = files["jpeg_420.jpg"]
    for k in (3, 6):
        files[f"exif_be_{k}.jpg"] = plain[:2] + exif_big_endian(k) + plain[2:]

    # PNG: every colour type we accept
    files["png_rgb.png"] = png_bytes(base)
    alpha = np.tile(np.linspace(0, 255, W, dtype=np.uint8), (H, 1))
    rgba = np.dstack([pattern(), alpha])
    files["png_rgba.png"] = png_bytes(Image.fromarray(rgba, "RGBA"))
    pal = base.quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    files["png_palette.png"] = png_bytes(pal)
    files["png_palette_trns.png"] = png_bytes(pal, transparency=bytes(range(0, 256, 16)))
    files["png_gray.png"] = png_bytes(base.convert("L"))
    gray_alpha = Image.merge("LA", (base.convert("L"), Image.fromarray(alpha, "L")))
    files["png_gray_alpha.png"] = png_bytes(gray_alpha)
    gray16 = (np.asarray(base.convert("L")).astype(np.uint16) * 257) ^ 0x35
    files["png_gray16.png"] = png_bytes(Image.fromarray(gray16))
    rgb16 = (pattern().astype(np.uint16) * 257) ^ 0x5A
    files["png_rgb16.png"] = png_rgb16(rgb16)

    # The 384x512 bench photo (4:2:0 baseline, quality 90, as cameras and PIL write it).
    files["photo_384x512.jpg"] = jpeg_bytes(photo(), quality=90, subsampling="4:2:0")

    # Bad inputs: every one must give an error, never a panic.
    files["bad_zero.jpg"] = b""
    files["bad_truncated.jpg"] = plain[: len(plain) * 6 // 10]
    files["bad_truncated.png"] = files["png_rgb.png"][: len(files["png_rgb.png"]) // 2]
    noise = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    files["bad_corrupt.jpg"] = b"\xff\xd8" + noise
    files["bad_corrupt.png"] = b"\x89PNG\r\n\x1a\n" + noise
    files["bad_text.jpg"] = b"this is not an image, only a text file named .jpg\n"
    files["bad_appledouble.jpg"] = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X" + bytes(72)

    reference: dict[str, dict] = {}
    for name, data in sorted(files.items()):
        (HERE / name).write_bytes(data)
        if name.startswith("bad_"):
            continue
        im = Image.open(io.BytesIO(data))
        if name.startswith("exif_"):
            im = ImageOps.exif_transpose(im)
        arr16 = np.asarray(im)
        if arr16.dtype == np.uint16 or im.mode.startswith("I"):
            # PIL clips 16-bit gray to 255 when converting; fastmask keeps the high byte.
            hi = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
            arr = np.dstack([hi, hi, hi]) if hi.ndim == 2 else hi
            note = "16-bit: reference is the high byte (v >> 8), not PIL's clipping convert"
        else:
            arr = np.asarray(im.convert("RGB"))
            note = ""
        arr = np.ascontiguousarray(arr, dtype=np.uint8)
        entry = {
            "width": int(arr.shape[1]),
            "height": int(arr.shape[0]),
            "mode": Image.open(io.BytesIO(data)).mode,
            "mean": [round(float(arr[..., c].mean()), 4) for c in range(3)],
            "fnv1a64": fnv1a64(arr.tobytes()),
        }
        if note:
            entry["note"] = note
        if name != "photo_384x512.jpg":
            ref_name = Path(name).stem + ".png"
            (REF / ref_name).write_bytes(png_bytes(Image.fromarray(arr, "RGB"), optimize=True))
            entry["ref"] = f"ref/{ref_name}"
        reference[name] = entry
    (HERE / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"{len(files)} fixtures, {len(reference)} references, {total / 1024:.1f} KiB in all")


if __name__ == "__main__":
    main()
