"""Real face photos shipped by registry packages, framed like the competition's 384 x 512
portraits, each bare, masked (mask drawn over nose and mouth, five colours) and with the mask
pulled below the nose: the set on which the face detectors are measured and tested.

The photos: skimage's `astronaut` and `camera` (the cameraman, seen in three-quarter view), and
matplotlib's `grace_hopper.jpg`; sklearn's `china.jpg` and `flower.jpg` and skimage's `chelsea`
(a cat) have no human face. The landmarks were read off the framed photos by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fastmask.faces.types import Box

FRAME = (384, 512)  # width, height of the competition's images
Point = tuple[float, float]

# (R, G, B) of the drawn masks: white, surgical blue, black, pink, navy.
MASK_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 232),
    "blue": (140, 185, 215),
    "black": (28, 28, 30),
    "pink": (232, 160, 182),
    "navy": (40, 52, 92),
}
BELOW_NOSE_COLOURS = ("white", "black")


@dataclass(frozen=True)
class Head:
    """Hand-read points of a framed face: eyes, nose tip, mouth corners, chin and cheeks."""

    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point
    chin_y: float
    cheeks: tuple[float, float]  # x of the face's left and right edge at the mouth

    @property
    def width(self) -> float:
        return self.cheeks[1] - self.cheeks[0]


@dataclass(frozen=True)
class Photo:
    """One framed test image: `kind` is bare, masked or below-nose; head None = no face."""

    name: str
    kind: str
    image: np.ndarray
    head: Head | None


def _astronaut() -> np.ndarray:
    from skimage import data

    return np.asarray(data.astronaut())


def _cameraman() -> np.ndarray:
    from skimage import data

    return np.repeat(np.asarray(data.camera())[:, :, None], 3, axis=2)


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return np.asarray(image.convert("RGB"))


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(name))

    return load


def _chelsea() -> np.ndarray:
    from skimage import data

    return np.asarray(data.chelsea())


# name -> (loader, 3:4 region (x0, y0, x1, y1) of the original, head in the framed image)
FACES: dict[str, tuple[Callable[[], np.ndarray], tuple[int, int, int, int], Head]] = {
    "astronaut": (
        _astronaut,
        (64, 0, 448, 512),
        Head((140, 101), (184, 103), (161, 128), (138, 140), (182, 142), 172, (118, 204)),
    ),
    "grace_hopper": (
        _grace_hopper,
        (38, 0, 488, 600),
        Head((156, 158), (228, 158), (196, 196), (162, 241), (228, 238), 285, (112, 262)),
    ),
    "cameraman": (
        _cameraman,
        (97, 40, 353, 381),
        Head((206, 159), (233, 162), (231, 190), (201, 209), (221, 210), 226, (160, 238)),
    ),
}
NO_FACE: dict[str, Callable[[], np.ndarray]] = {
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "chelsea": _chelsea,
}


def frame(image: np.ndarray, region: Sequence[int]) -> np.ndarray:
    """Crop `region` (x0, y0, x1, y1) and resize it to the competition's 384 x 512."""
    import cv2

    x0, y0, x1, y1 = region
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    return cv2.resize(crop, FRAME, interpolation=cv2.INTER_AREA)


def mask_polygon(head: Head, below_nose: bool = False) -> np.ndarray:
    """A face mask's outline: from the nose bridge (or just under the nose tip) to the chin,
    cheek to cheek."""
    (lx, ly), (rx, ry) = head.left_eye, head.right_eye
    nx, ny = head.nose
    mouth_y = (head.mouth_left[1] + head.mouth_right[1]) / 2
    eye_y = (ly + ry) / 2
    top = ny + 0.3 * (mouth_y - ny) if below_nose else eye_y + 0.4 * (ny - eye_y)
    left, right = head.cheeks
    chin = head.chin_y + 0.04 * head.width
    centre = (lx + rx) / 2 if not below_nose else nx
    points = [
        (left, top + 0.12 * head.width),
        (centre, top),
        (right, top + 0.12 * head.width),
        (right - 0.04 * head.width, mouth_y),
        (right - 0.2 * head.width, chin - 0.08 * head.width),
        ((left + right) / 2, chin),
        (left + 0.2 * head.width, chin - 0.08 * head.width),
        (left + 0.04 * head.width, mouth_y),
    ]
    return np.round(np.asarray(points)).astype(np.int32)


def draw_mask(
    image: np.ndarray, head: Head, colour: tuple[int, int, int], below_nose: bool = False
) -> np.ndarray:
    """A copy of `image` with a filled mask, its pleats and ear loops drawn on."""
    import cv2

    out = image.copy()
    poly = mask_polygon(head, below_nose)
    shade = tuple(int(c * 0.8) for c in colour)
    cv2.fillPoly(out, [poly], colour, lineType=cv2.LINE_AA)
    top, bottom = poly[:, 1].min(), poly[:, 1].max()
    for k in (1, 2, 3):  # pleats
        y = int(top + (bottom - top) * k / 4)
        cv2.line(out, (int(poly[0][0] + 4), y), (int(poly[2][0] - 4), y), shade, 1, cv2.LINE_AA)
    cv2.polylines(out, [poly], True, shade, 1, cv2.LINE_AA)
    ear_y = int(head.left_eye[1])
    for (x, y), side in ((poly[0], -1), (poly[2], 1)):  # ear loops
        cv2.line(out, (int(x), int(y)), (int(x) + side * 6, ear_y), shade, 2, cv2.LINE_AA)
    return out


def photo_set() -> list[Photo]:
    """Every framed photo: per face bare, masked in five colours, below the nose in two;
    then the photos without a face."""
    out: list[Photo] = []
    for name, (load, region, head) in FACES.items():
        bare = frame(load(), region)
        out.append(Photo(name, "bare", bare, head))
        for colour, rgb in MASK_COLOURS.items():
            out.append(Photo(f"{name}/{colour}", "masked", draw_mask(bare, head, rgb), head))
        for colour in BELOW_NOSE_COLOURS:
            image = draw_mask(bare, head, MASK_COLOURS[colour], below_nose=True)
            out.append(Photo(f"{name}/{colour}-below-nose", "below-nose", image, head))
    for name, load in NO_FACE.items():
        out.append(Photo(name, "no-face", np.ascontiguousarray(load()), None))
    return out


def is_hit(box: Box | None, head: Head) -> bool:
    """A box contains the nose tip and is 0.5 to 2.5 times the face's width wide."""
    if box is None:
        return False
    x0, y0, x1, y1 = box
    nx, ny = head.nose
    return x0 <= nx <= x1 and y0 <= ny <= y1 and 0.5 <= (x1 - x0) / head.width <= 2.5


def rotate(image: np.ndarray, angle: float, centre: Point) -> np.ndarray:
    """`image` turned by `angle` degrees anticlockwise (as seen) about `centre`, same size."""
    import cv2

    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def contact_sheet(
    photos: Sequence[Photo], boxes: Sequence[Box | None], cols: int = 7
) -> np.ndarray:
    """The photos with their boxes (green hit, red miss or false box), `cols` per row, at
    half size: the figure in the README."""
    import cv2

    tiles = []
    for photo, box in zip(photos, boxes, strict=True):
        tile = frame(photo.image, (0, 0, photo.image.shape[1], photo.image.shape[0]))
        if box is not None:
            sx, sy = FRAME[0] / photo.image.shape[1], FRAME[1] / photo.image.shape[0]
            good = photo.head is not None and is_hit(box, photo.head)
            colour = (40, 200, 60) if good else (230, 30, 30)
            x0, y0, x1, y1 = box
            p0, p1 = (int(x0 * sx), int(y0 * sy)), (int(x1 * sx), int(y1 * sy))
            cv2.rectangle(tile, p0, p1, colour, 3)
        tiles.append(cv2.resize(tile, (FRAME[0] // 2, FRAME[1] // 2), interpolation=cv2.INTER_AREA))
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i : i + cols], axis=1) for i in range(0, len(tiles), cols)]
    return np.concatenate(rows, axis=0)
