"""Drawing one synthetic person: cartoon faces whose labels leave visible cues.

`fastmask.synth` plans who to draw and writes the files; this module only draws. Each
person's look comes from the generator it is handed, never from global state, so the same
generator state gives the same pixels.

- mask: five styles (surgical, cloth, bandana, KF94, patterned cloth) in several colours,
  over nose and mouth (mask1..5), under the nose or on the chin (incorrect_mask), or none
  (normal); the nostrils and lips are drawn large so "covered or not" survives 128 px.
- gender: a continuous "femininity" score with noise drives hair length, side locks, face
  width, jaw shape, shoulder width, eyebrow thickness, eyeliner and a warmer palette.
- age: the true, unclipped age drives forehead lines, eye bags, crow's feet, hair and
  eyebrow greyness, a receding hairline and skin tone, each a smooth ramp plus noise
  around 30 and 60, so the bands blur at their edges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 384, 512
STEMS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")

Color = tuple[int, int, int]
RGBA = tuple[int, int, int, int]
Point = tuple[float, float]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def _mix(a: Color, b: Color, t: float) -> Color:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _shade(c: Color, k: float) -> Color:
    return (min(255, round(c[0] * k)), min(255, round(c[1] * k)), min(255, round(c[2] * k)))


def _a(c: Color) -> RGBA:
    return (c[0], c[1], c[2], 255)


def _pick(rng: np.random.Generator, options: Sequence[Color]) -> Color:
    return options[int(rng.integers(len(options)))]


def _jitter(rng: np.random.Generator, c: Color, sd: float) -> Color:
    d = rng.normal(0.0, sd, 3)
    return (
        int(np.clip(c[0] + d[0], 0, 255)),
        int(np.clip(c[1] + d[1], 0, 255)),
        int(np.clip(c[2] + d[2], 0, 255)),
    )


MASK_STYLES = ("surgical", "cloth", "bandana", "kf94", "patterned")
_MASK_COLORS: dict[str, tuple[Color, ...]] = {
    "surgical": ((140, 190, 228), (236, 239, 242), (150, 205, 200), (232, 178, 196), (38, 38, 42)),
    "cloth": ((28, 28, 30), (125, 125, 132), (70, 70, 76), (40, 52, 95), (196, 180, 156)),
    "bandana": ((178, 30, 40), (30, 42, 105), (22, 22, 24), (40, 110, 60)),
    "kf94": ((242, 242, 242), (30, 30, 32), (214, 200, 180), (188, 190, 195)),
    "patterned": ((30, 40, 90), (150, 40, 50), (230, 225, 210), (60, 90, 70), (90, 90, 95)),
}
_ACCENTS = ((245, 245, 240), (230, 200, 60), (20, 20, 20), (200, 60, 80), (120, 170, 220))


@dataclass(frozen=True)
class _MaskSpec:
    style: str
    color: Color
    accent: Color
    pattern: int  # 0 dots, 1 stripes, 2 checks, 3 diagonal stripes


def _draw_mask_spec(rng: np.random.Generator, style: str | None = None) -> _MaskSpec:
    if style is None:
        style = MASK_STYLES[int(rng.choice(5, p=[0.34, 0.22, 0.12, 0.18, 0.14]))]
    color = _jitter(rng, _pick(rng, _MASK_COLORS[style]), 6)
    accent = _pick(rng, _ACCENTS)
    if sum(abs(x - y) for x, y in zip(color, accent, strict=True)) < 150:
        accent = (245, 245, 240) if sum(color) < 380 else (25, 25, 25)
    return _MaskSpec(style, color, accent, int(rng.integers(4)))


_SKIN_BASE: Color = (236, 200, 172)
_HAIR_COLORS = ((22, 18, 16), (34, 26, 22), (48, 36, 28), (62, 44, 32), (92, 62, 42))
_CLOTHES_COOL = ((40, 45, 60), (70, 72, 78), (30, 60, 100), (50, 80, 60), (120, 120, 125))
_CLOTHES_WARM = ((190, 120, 140), (220, 200, 190), (160, 60, 70), (230, 170, 150), (150, 110, 160))
_BG_COLORS = (
    (232, 232, 228), (205, 210, 215), (180, 190, 200), (215, 205, 185), (160, 170, 160),
    (240, 240, 245), (120, 130, 140), (200, 190, 200), (90, 95, 100), (225, 215, 200),
)  # fmt: skip


@dataclass(frozen=True)
class _Person:
    """Identity of one person: fixed across their 7 images."""

    fem: float  # continuous femininity score: about -1 male, +1 female
    scale: float
    width: float
    dx: float
    dy: float
    skin: Color
    hair: Color
    brow_color: Color
    lips: Color
    clothes: Color
    hair_len: float  # how far long hair falls, in face half-heights below the face centre
    hair_wide: float
    fringe: int  # 0 flat, 1 swept left, 2 swept right, 3 low bangs
    hairline: float
    jaw: float
    shoulders: float
    brow_w: float
    liner: float
    eye_size: float
    eye_gap: float
    nose_size: float
    mouth_w: float
    lines: float  # forehead line strength (age, around 30)
    bags: float  # eye bag strength
    crows: float  # crow's feet strength (age, around 60)
    spots: float
    stubble: bool
    glasses: bool
    collar: int
    masks: tuple[_MaskSpec, ...]  # mask1..mask5
    wrong: _MaskSpec  # the mask of incorrect_mask
    wrong_chin: bool  # incorrect_mask on the chin (else just under the nose)
    background: NDArray[np.uint8]


def draw_person(rng: np.random.Generator, female: bool, true_age: float) -> _Person:
    """A person's look from their labels: gender and true age set the cues, rng the rest."""
    a = true_age
    fem = float(rng.normal(1.0 if female else -1.0, 0.4))
    f = max(-1.6, min(1.6, fem))
    # Age ramps: steep around 30 and 60 plus per-person noise, so the bands blur at the edges.
    w30 = _clip01(_sigmoid((a - 30.0) / 1.6) + 0.08 * (a - 30.0) / 50.0 + rng.normal(0, 0.05))
    w60 = _clip01(_sigmoid((a - 60.0) / 1.1) + rng.normal(0, 0.04))
    mid = _clip01((a - 38.0) / 22.0)
    grey = _clip01(0.15 * mid + 0.8 * w60 + rng.normal(0, 0.04))
    tone = float(rng.uniform(0.74, 1.04)) * (1.0 + 0.03 * f) * (1.0 - 0.05 * w30 - 0.05 * w60)
    skin = _shade(_jitter(rng, _SKIN_BASE, 7), tone)
    skin = _mix(skin, (210, 180, 120), 0.12 * w60)  # older skin a little sallower
    hair = _mix(_jitter(rng, _pick(rng, _HAIR_COLORS), 4), (214, 214, 216), grey)
    brow_color = _mix(_jitter(rng, _pick(rng, _HAIR_COLORS[:3]), 3), (190, 190, 190), 0.7 * grey)
    lips = _mix(_shade(skin, 0.78), (196, 62, 74), _clip01(0.42 + 0.22 * f))
    warm = rng.random() < (0.5 + 0.25 * math.tanh(f))  # palette shifts with gender, softly
    clothes = _jitter(rng, _pick(rng, _CLOTHES_WARM if warm else _CLOTHES_COOL), 12)
    hair_len = float(np.clip(0.05 + 0.95 * (f + 1.0) + rng.normal(0, 0.18), -0.1, 2.4))
    masks = tuple(_draw_mask_spec(rng) for _ in range(5))
    if len({m.style for m in masks}) == 1:  # at least two styles across mask1..5
        masks = masks[:4] + (
            _draw_mask_spec(rng, MASK_STYLES[MASK_STYLES.index(masks[0].style) - 1]),
        )
    return _Person(
        fem=fem,
        scale=float(rng.uniform(0.86, 1.14)),
        width=float(1.0 - 0.05 * f + rng.normal(0, 0.025)),
        dx=float(rng.uniform(-24, 24)),
        dy=float(rng.uniform(-18, 18)),
        skin=skin,
        hair=hair,
        brow_color=brow_color,
        lips=lips,
        clothes=clothes,
        hair_len=hair_len,
        hair_wide=float(1.1 + 0.09 * max(0.0, f + 0.5) + rng.uniform(0, 0.06)),
        fringe=int(rng.integers(4)),
        hairline=float(0.6 + rng.uniform(-0.04, 0.04) - (0.16 * w60 if f < 0 else 0.0)),
        jaw=float(np.clip(0.7 - 0.14 * f + rng.normal(0, 0.03), 0.5, 0.92)),
        shoulders=float(2.4 - 0.22 * f + rng.normal(0, 0.06)),
        brow_w=float(max(2.5, 5.6 - 1.9 * f + rng.normal(0, 0.4))),
        liner=float(max(0.0, f)),
        eye_size=float(rng.uniform(0.9, 1.1)),
        eye_gap=float(rng.uniform(0.36, 0.41)),
        nose_size=float(rng.uniform(0.9, 1.15)),
        mouth_w=float(rng.uniform(0.88, 1.12)),
        lines=_clip01(0.8 * w30 + 0.3 * w60),
        bags=_clip01(0.55 * w30 + 0.45 * w60 + rng.normal(0, 0.04)),
        crows=_clip01(0.3 * mid + 0.7 * w60),
        spots=_clip01(w60 - 0.3),
        stubble=bool(f < -0.4 and rng.random() < 0.35),
        glasses=bool(rng.random() < 0.12),
        collar=int(rng.integers(3)),
        masks=masks,
        wrong=_draw_mask_spec(rng),
        wrong_chin=bool(rng.random() < 0.4),
        background=_draw_background(rng),
    )


def _draw_background(rng: np.random.Generator) -> NDArray[np.uint8]:
    """Flat colour, gradient, stripes, tiles, blotches or a wall with a door frame."""
    kind = int(rng.integers(6))
    c1 = np.array(_jitter(rng, _pick(rng, _BG_COLORS), 10), np.float32)
    c2 = np.array(_jitter(rng, _pick(rng, _BG_COLORS), 10), np.float32)
    ys = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    xs = np.linspace(0.0, 1.0, WIDTH, dtype=np.float32)[None, :, None]
    if kind == 0:
        bg = np.broadcast_to(c1, (HEIGHT, WIDTH, 3))
    elif kind == 1:
        t = ys if rng.random() < 0.6 else xs
        bg = c1 + (c2 - c1) * t
    elif kind == 2:
        period = int(rng.integers(14, 60))
        on = ((np.arange(WIDTH) // period) % 2).astype(np.float32)[None, :, None]
        bg = c1 + (c2 - c1) * 0.25 * on + 0.0 * ys
    elif kind == 3:
        tile = int(rng.integers(30, 90))
        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
        on = (((yy // tile) + (xx // tile)) % 2).astype(np.float32)[..., None]
        bg = c1 + (c2 - c1) * 0.18 * on
    elif kind == 4:
        small = rng.normal(0, 1, (9, 7, 1)).astype(np.float32)
        field = np.asarray(
            Image.fromarray(((small[..., 0] + 3) * 40).clip(0, 255).astype(np.uint8)).resize(
                (WIDTH, HEIGHT), Image.Resampling.BICUBIC
            ),
            np.float32,
        )[..., None]
        bg = c1 + (field - 120.0) * 0.15 + (c2 - c1) * 0.1
    else:
        bg = np.array(np.broadcast_to(c1, (HEIGHT, WIDTH, 3)))
        x0 = int(rng.integers(-40, WIDTH - 60))
        w = int(rng.integers(80, 180))
        bg[30:, max(0, x0) : max(0, x0 + w)] = c2
        floor = int(rng.integers(400, 470))
        bg[floor:] = bg[floor:] * 0.8
    return np.clip(np.broadcast_to(bg, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class _Face:
    cx: float
    cy: float
    rx: float
    ry: float


def _mask_outline(style: str, cx: float, top: float, bottom: float, hw: float) -> list[Point]:
    """Polygon of a mask shape between top and bottom, half-width hw."""
    h = bottom - top
    ts = np.linspace(-1.0, 1.0, 15)
    if style == "bandana":
        return [
            (cx - 1.14 * hw, top + 0.04 * h),
            (cx, top - 0.02 * h),
            (cx + 1.14 * hw, top + 0.04 * h),
            (cx + 0.5 * hw, bottom + 0.1 * h),
            (cx, bottom + 0.45 * h),
            (cx - 0.5 * hw, bottom + 0.1 * h),
        ]
    if style == "kf94":
        mid = top + 0.42 * h
        up = [(cx + 1.06 * hw * t, mid - (mid - top + 0.06 * h) * (1 - t * t) ** 0.6) for t in ts]
        down = [
            (cx + 1.0 * hw * t, mid + (bottom + 0.04 * h - mid) * (1 - t * t) ** 0.75)
            for t in ts[::-1]
        ]
        return up + down[1:-1]
    # cloth and patterned: contoured, a peak over the nose, rounded under the chin
    up = [(cx + hw * t, top + 0.2 * h * abs(t) ** 1.5 - 0.05 * h * (1 - abs(t))) for t in ts]
    down = [(cx + 0.93 * hw * t, bottom - 0.32 * h * t * t) for t in ts[::-1]]
    return up + down


def _pattern(spec: _MaskSpec, w: int, h: int, s: float) -> Image.Image:
    """A w x h RGBA texture: dots, stripes, checks or diagonal stripes in the accent colour."""
    yy, xx = np.mgrid[0:h, 0:w]
    p = max(6, round(13 * s))
    if spec.style == "bandana" or spec.pattern == 0:
        on = ((xx % p - p / 2) ** 2 + ((yy + (xx // p) * p // 2) % p - p / 2) ** 2) < (
            p * 0.22
        ) ** 2
    elif spec.pattern == 1:
        on = (yy // (p // 2)) % 3 == 0
    elif spec.pattern == 2:
        on = ((yy // p) + (xx // p)) % 2 == 0
    else:
        on = ((xx + yy) // (p // 2)) % 3 == 0
    arr = np.empty((h, w, 4), np.uint8)
    arr[...] = _a(spec.color)
    arr[on] = _a(spec.accent)
    return Image.fromarray(arr, "RGBA")


def _draw_mask(
    layer: Image.Image, d: ImageDraw.ImageDraw, face: _Face, spec: _MaskSpec, where: str
) -> None:
    """A mask worn over nose and mouth ("wear"), under the nose ("nose") or on the chin."""
    cx, cy, rx, ry = face.cx, face.cy, face.rx, face.ry
    top, bottom, hw = {
        "wear": (cy + 0.1 * ry, cy + 1.06 * ry, 1.04 * rx),
        "nose": (cy + 0.44 * ry, cy + 1.14 * ry, 1.0 * rx),
        "chin": (cy + 0.76 * ry, cy + 1.24 * ry, 0.9 * rx),
    }[where]
    h = bottom - top
    dark = _shade(spec.color, 0.7) if sum(spec.color) > 150 else (70, 70, 74)
    loop = (235, 235, 235) if spec.style in ("surgical", "kf94") else dark
    ear_l, ear_r = (cx - 1.0 * rx, cy + 0.02 * ry), (cx + 1.0 * rx, cy + 0.02 * ry)
    lw = max(2, round(rx / 28))
    if spec.style == "surgical":
        for side, ear in ((-1, ear_l), (1, ear_r)):
            d.line([(cx + side * hw, top + 0.12 * h), ear], fill=_a(loop), width=lw)
            d.line([(cx + side * hw, bottom - 0.15 * h), ear], fill=_a(loop), width=lw)
        d.rounded_rectangle(
            (cx - hw, top, cx + hw, bottom), radius=0.16 * h, fill=_a(spec.color), outline=_a(dark)
        )
        for k in (0.3, 0.5, 0.7):
            y = top + k * h
            d.line([(cx - 0.96 * hw, y), (cx + 0.96 * hw, y + 2)], fill=_a(dark), width=lw + 1)
        d.line([(cx - 0.3 * hw, top + 3), (cx + 0.3 * hw, top + 3)], fill=_a(dark), width=lw)
        return
    outline = _mask_outline(spec.style, cx, top, bottom, hw)
    for side, ear in ((-1, ear_l), (1, ear_r)):
        edge = (cx + side * hw * 0.98, top + 0.3 * h)
        d.line([edge, ear], fill=_a(loop), width=lw + (1 if spec.style == "bandana" else 0))
    if spec.style in ("bandana", "patterned"):
        xs = [p[0] for p in outline]
        ys = [p[1] for p in outline]
        x0, y0 = math.floor(min(xs)), math.floor(min(ys))
        w, hh = math.ceil(max(xs)) - x0 + 1, math.ceil(max(ys)) - y0 + 1
        cut = Image.new("L", (w, hh), 0)
        ImageDraw.Draw(cut).polygon([(x - x0, y - y0) for x, y in outline], fill=255)
        layer.paste(_pattern(spec, w, hh, rx / 70.0), (x0, y0), cut)
        d.polygon(outline, outline=_a(dark), width=lw)
    else:
        d.polygon(outline, fill=_a(spec.color), outline=_a(dark), width=lw)
    if spec.style == "kf94":
        mid = top + 0.42 * h
        d.line([(cx - 1.0 * hw, mid), (cx + 1.0 * hw, mid)], fill=_a(dark), width=lw)
        d.line([(cx, top - 0.04 * h), (cx, bottom)], fill=_a(dark), width=lw)
    elif spec.style == "cloth":
        d.line([(cx, top - 0.03 * h), (cx, bottom - 0.02 * h)], fill=_a(dark), width=lw)


def _draw_body(d: ImageDraw.ImageDraw, p: _Person, face: _Face) -> None:
    """Shoulders and collar, straight onto the background (they do not tilt with the head)."""
    cx, cy, rx, ry = face.cx, face.cy, face.rx, face.ry
    neck_y = cy + 1.3 * ry
    sw = p.shoulders * rx
    side = [
        (0.5 * rx, neck_y),
        (0.78 * sw, neck_y + 0.12 * ry),
        (0.96 * sw, neck_y + 0.38 * ry),
        (1.02 * sw, neck_y + 0.8 * ry),
        (1.08 * sw, HEIGHT + 10),
    ]
    d.polygon([(cx - x, y) for x, y in side] + [(cx + x, y) for x, y in side[::-1]], p.clothes)
    if p.collar == 0:
        v = [(cx - 0.42 * rx, neck_y - 2), (cx + 0.42 * rx, neck_y - 2), (cx, neck_y + 0.55 * ry)]
        d.polygon(v, fill=_shade(p.skin, 0.84))
    elif p.collar == 1:
        band = (cx - 0.62 * rx, neck_y - 0.18 * ry, cx + 0.62 * rx, neck_y + 0.2 * ry)
        d.ellipse(band, fill=_shade(p.clothes, 0.75))


def _draw_head(
    layer: Image.Image, p: _Person, face: _Face, stem: str, rng: np.random.Generator
) -> None:
    """Hair, neck, face and (per stem) the mask onto a transparent layer around the head."""
    d = ImageDraw.Draw(layer)
    cx, cy, rx, ry = face.cx, face.cy, face.rx, face.ry
    skin, shadow = p.skin, _shade(p.skin, 0.84)

    # Hair behind the head; long hair falls over the shoulders.
    hw = p.hair_wide * rx
    d.ellipse((cx - hw, cy - 1.22 * ry, cx + hw, cy + 0.35 * ry), fill=_a(p.hair))
    if p.hair_len > 0.25:
        bottom = cy + p.hair_len * ry
        flare = [
            (hw, cy - 0.5 * ry),
            (1.06 * hw, cy + 0.4 * ry),
            (1.14 * hw, bottom - 0.15 * ry),
            (0.95 * hw, bottom),
            (0.5 * hw, bottom - 0.08 * ry),
        ]
        d.polygon(
            [(cx - x, y) for x, y in flare] + [(cx + x, y) for x, y in flare[::-1]], _a(p.hair)
        )
    d.rectangle((cx - 0.44 * rx, cy + 0.4 * ry, cx + 0.44 * rx, cy + 1.4 * ry), fill=_a(shadow))

    # Ears, then the face with a jaw that is squarer the more masculine the person.
    for side in (-1, 1):
        ex = cx + side * 0.98 * rx
        d.ellipse((ex - 0.16 * rx, cy - 0.22 * ry, ex + 0.16 * rx, cy + 0.26 * ry), fill=_a(shadow))
    d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=_a(skin))
    jw = p.jaw * rx
    jaw = [(0.97 * rx, cy + 0.15 * ry), (jw, cy + 0.86 * ry), (0.42 * rx, cy + 1.0 * ry)]
    d.polygon([(cx - x, y) for x, y in jaw] + [(cx + x, y) for x, y in jaw[::-1]], _a(skin))
    if p.stubble:
        beard = [(0.9 * rx, cy + 0.45 * ry), *jaw[1:]]
        chin = [(cx - x, y) for x, y in beard] + [(cx + x, y) for x, y in beard[::-1]]
        lip = [(cx + 0.35 * rx, cy + 0.72 * ry), (cx - 0.35 * rx, cy + 0.72 * ry)]
        d.polygon(chin + lip, _a(_mix(skin, (40, 30, 26), 0.25)))

    # Age marks, drawn at the person's strength: invisible when young.
    line_w = max(2, round(rx / 20 * (1.0 + 0.5 * p.crows)))
    crease = _mix(skin, (90, 55, 45), 0.7 * p.lines)
    for k, y in enumerate((cy - 0.36 * ry, cy - 0.45 * ry, cy - 0.54 * ry)):
        half = (0.5 - 0.06 * k) * rx
        d.arc((cx - half, y, cx + half, y + 0.3 * ry), 200, 340, fill=_a(crease), width=line_w)
    eye_y = cy - 0.04 * ry
    gap = p.eye_gap * rx
    ew, eh = 0.17 * rx * p.eye_size, 0.075 * ry * p.eye_size
    bag = _mix(skin, (110, 70, 70), 0.7 * p.bags)
    crow = _mix(skin, (95, 60, 50), 0.65 * p.crows)
    gaze = float(rng.normal(0, 0.15)) * ew
    ink = _a((30, 22, 20))
    for side in (-1, 1):
        ex = cx + side * gap
        under = (ex - ew * 0.9, eye_y - eh * 0.2, ex + ew * 0.9, eye_y + eh * 2.2)
        d.arc(under, 20, 160, fill=_a(bag), width=max(2, round(rx / 16)))
        for k in (-1, 0, 1):
            x0 = ex + side * ew * 1.15
            d.line(
                [(x0, eye_y + k * 0.3 * eh), (x0 + side * 0.16 * rx, eye_y + k * eh)],
                fill=_a(crow),
                width=max(2, round(rx / 26)),
            )
        d.ellipse((ex - ew, eye_y - eh, ex + ew, eye_y + eh), fill=_a((244, 242, 238)))
        ir = eh * 0.95
        d.ellipse((ex + gaze - ir, eye_y - ir, ex + gaze + ir, eye_y + ir), fill=_a((52, 36, 28)))
        lid = max(1, round(rx / 40 * (1.0 + 1.6 * p.liner)))
        d.arc((ex - ew, eye_y - eh, ex + ew, eye_y + eh), 190, 350, fill=ink, width=lid)
        by = cy - 0.23 * ry
        d.line(
            [(ex - side * 0.18 * rx, by + 0.03 * ry), (ex + side * 0.22 * rx, by - 0.01 * ry)],
            fill=_a(p.brow_color),
            width=max(2, round(p.brow_w * rx / 70)),
        )
        if p.glasses:
            r = 0.28 * rx
            box = (ex - r, eye_y - r * 0.8, ex + r, eye_y + r * 0.8)
            d.ellipse(box, outline=_a((35, 35, 38)), width=max(2, round(rx / 30)))
    if p.glasses:
        bridge = [(cx - gap + 0.28 * rx, eye_y), (cx + gap - 0.28 * rx, eye_y)]
        d.line(bridge, fill=_a((35, 35, 38)), width=2)

    # Nose and mouth, large and dark enough to read at 128 px.
    ns = p.nose_size
    ridge = [(cx + 0.04 * rx, cy + 0.02 * ry), (cx + 0.1 * rx, cy + 0.27 * ry)]
    d.line(ridge, fill=_a(shadow), width=max(2, round(rx / 18)))
    tip_y = cy + 0.29 * ry
    tip = (cx - 0.17 * rx * ns, tip_y - 0.07 * ry, cx + 0.17 * rx * ns, tip_y + 0.06 * ry)
    d.ellipse(tip, fill=_a(_shade(skin, 0.9)))
    for side in (-1, 1):
        nx = cx + side * 0.085 * rx * ns
        nostril = (nx - 0.055 * rx * ns, tip_y, nx + 0.055 * rx * ns, tip_y + 0.055 * ry)
        d.ellipse(nostril, fill=_a((72, 40, 36)))
        wx = cx + side * 0.16 * rx * ns
        wing = (wx - 0.06 * rx, tip_y - 0.07 * ry, wx + 0.06 * rx, tip_y + 0.06 * ry)
        start = 90 if side < 0 else -90
        d.arc(wing, start, start + 180, fill=_a(_shade(skin, 0.7)), width=max(2, round(rx / 24)))
    fold = _a(_mix(skin, (110, 70, 60), 0.5 * p.lines))
    for side in (-1, 1):
        d.line(
            [(cx + side * 0.22 * rx, tip_y + 0.03 * ry), (cx + side * 0.36 * rx, cy + 0.6 * ry)],
            fill=fold,
            width=max(2, round(rx / 22)),
        )
    mw = 0.3 * rx * p.mouth_w
    my = cy + 0.58 * ry
    opening = float(rng.uniform(0.0, 0.03)) * ry
    d.ellipse((cx - mw, my - 0.07 * ry, cx + mw, my + 0.005 * ry), fill=_a(p.lips))
    lower = (cx - 0.85 * mw, my - 0.01 * ry, cx + 0.85 * mw, my + 0.09 * ry + opening)
    d.ellipse(lower, fill=_a(_shade(p.lips, 1.08)))
    d.line([(cx - mw, my), (cx + mw, my)], fill=_a((80, 30, 32)), width=max(2, round(rx / 22)))
    if opening > 0.015 * ry:
        d.ellipse((cx - 0.5 * mw, my, cx + 0.5 * mw, my + opening), fill=_a((60, 20, 24)))
    if p.spots > 0.05:
        spot = _a(_mix(skin, (120, 80, 50), 0.5 * p.spots))
        for sx, sy in ((-0.55, 0.12), (0.6, 0.2), (-0.45, 0.3), (0.5, -0.45)):
            x, y, r = cx + sx * rx, cy + sy * ry, 0.04 * rx
            d.ellipse((x - r, y - r, x + r, y + r), fill=spot)

    # Front hair: fringe and, the longer the hair, side locks framing the face.
    hl = cy - p.hairline * ry
    dome = (cx - 1.06 * rx, hl - 0.64 * ry, cx + 1.06 * rx, hl + 0.64 * ry)
    d.chord(dome, 180, 360, fill=_a(p.hair))
    if p.fringe in (1, 2):
        s = -1 if p.fringe == 1 else 1
        sweep = [
            (cx - s * 0.2 * rx, hl - 0.1 * ry),
            (cx + s * 1.02 * rx, hl + 0.22 * ry),
            (cx + s * 1.02 * rx, hl - 0.3 * ry),
        ]
        d.polygon(sweep, fill=_a(p.hair))
    elif p.fringe == 3:
        bangs = (cx - 0.95 * rx, hl - 0.1 * ry, cx + 0.95 * rx, hl + 0.13 * ry)
        d.chord(bangs, 0, 180, fill=_a(p.hair))
    if p.hair_len > 0.45:
        lock = (0.1 + 0.1 * _clip01(p.hair_len - 0.45)) * rx
        low = cy + min(p.hair_len, 1.6) * ry
        for side in (-1, 1):
            outer = cx + side * 1.07 * rx
            strand = [
                (cx + side * 0.7 * rx, hl + 0.05 * ry),
                (cx + side * (0.88 * rx - lock), cy + 0.1 * ry),
                (cx + side * (0.95 * rx - lock), low),
                (outer + side * 0.1 * rx, low),
                (outer, hl),
            ]
            d.polygon(strand, fill=_a(p.hair))

    if stem == "incorrect_mask":
        _draw_mask(layer, d, face, p.wrong, "chin" if p.wrong_chin else "nose")
    elif stem != "normal":
        _draw_mask(layer, d, face, p.masks[STEMS.index(stem)], "wear")


def render(p: _Person, stem: str, rng: np.random.Generator) -> Image.Image:
    """One 384x512 RGB photo of person p for the given stem."""
    s = p.scale * float(1.0 + rng.normal(0, 0.025))
    cx = WIDTH / 2 + p.dx + float(rng.normal(0, 5))
    cy = 205.0 + p.dy + float(rng.normal(0, 5))
    rx, ry = 70.0 * s * p.width, 92.0 * s
    img = Image.fromarray(p.background, "RGB")
    _draw_body(ImageDraw.Draw(img), p, _Face(cx, cy, rx, ry))

    # The head is drawn on its own small layer so that tilting it stays cheap.
    x0, y0 = math.floor(cx - 1.75 * rx), math.floor(cy - 1.45 * ry)
    x1 = math.ceil(cx + 1.75 * rx)
    y1 = math.ceil(cy + (max(1.6, p.hair_len) + 0.1) * ry)
    layer = Image.new("RGBA", (x1 - x0, y1 - y0), (0, 0, 0, 0))
    _draw_head(layer, p, _Face(cx - x0, cy - y0, rx, ry), stem, rng)
    tilt = float(np.clip(rng.normal(0, 3.5), -8, 8))
    pivot = (cx - x0, cy + 1.0 * ry - y0)  # the head turns about the neck
    layer = layer.rotate(tilt, resample=Image.Resampling.BILINEAR, center=pivot)
    img.paste(layer, (x0, y0), layer)
    if rng.random() < 0.2:  # some photos slightly out of focus
        img = img.filter(ImageFilter.BoxBlur(float(rng.uniform(0.5, 1.2))))

    # Lighting (contrast, brightness, colour cast) as a lookup table, then a side light
    # and sensor noise as one small integer field.
    contrast = float(rng.uniform(0.82, 1.15))
    shift = float(rng.normal(0, 12)) + rng.normal(0, 5, 3)
    levels = np.arange(256, dtype=np.float32)
    lut = np.concatenate([(levels - 128.0) * contrast + 128.0 + c for c in shift])
    img = img.point(np.clip(lut, 0, 255).round().astype(np.uint8).tolist())
    side = (np.linspace(-1.0, 1.0, WIDTH) * float(rng.normal(0, 10))).round().astype(np.int16)
    amp = int(rng.integers(2, 7))
    field = rng.integers(-amp, amp + 1, (HEIGHT, WIDTH, 1), dtype=np.int16)
    field += side[None, :, None]
    arr = np.asarray(img, np.int16) + field
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def save_image(img: Image.Image, path: Path, rng: np.random.Generator) -> None:
    """JPEG with mixed settings (mostly baseline 4:2:0, some 4:4:4, some progressive) or PNG."""
    quality = int(rng.integers(85, 96))
    roll = float(rng.random())
    if path.suffix == ".png":
        img.save(path, "PNG")
    elif roll < 0.75:
        img.save(path, "JPEG", quality=quality, subsampling=2)
    elif roll < 0.88:
        img.save(path, "JPEG", quality=quality, subsampling=0)
    else:
        img.save(path, "JPEG", quality=quality, subsampling=2, progressive=True)
