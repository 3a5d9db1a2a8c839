"""`--crop face-aligned` through the native loader: turned crop boxes against the OpenCV
reference (`fastmask.faces.aligned_crop`), and a real face turned by 15 degrees coming out with
its eyes level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastmask import faces
from fastmask.crops import aligned_box
from fastmask.faces import align, photos
from fastmask.loader import Loader

OUT_W, OUT_H = 96, 112  # not square: a swapped width and height would show


def loader_crops(
    paths: list[Path], boxes: list, size: tuple[int, int] = (OUT_W, OUT_H), **kw
) -> np.ndarray:
    """The loader's eval crops of `paths` as HWC uint8, size (width, height)."""
    with Loader(
        paths,
        batch_size=len(paths),
        image_size=(size[1], size[0]),
        train=kw.pop("train", False),
        augment=kw.pop("augment", "none"),
        crop_boxes=boxes,
        **kw,
    ) as loader:
        return np.concatenate([x.permute(0, 2, 3, 1).numpy().copy() for x, _ in loader])


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.fixture(scope="module")
def hopper(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, photos.Head]:
    """Grace Hopper framed as a 384 x 512 portrait, and her hand-read landmarks."""
    pytest.importorskip("matplotlib")
    load, region, head = photos.FACES["grace_hopper"]
    return photos.frame(load(), region), head


def save_png(image: np.ndarray, path: Path) -> Path:
    Image.fromarray(image).save(path)  # lossless: the loader sees exactly these pixels
    return path


@pytest.mark.parametrize("angle", [0.0, 15.0, -30.0, 90.0])
def test_turned_box_matches_the_reference(hopper, tmp_path: Path, angle: float) -> None:
    image, head = hopper
    path = save_png(image, tmp_path / "hopper.png")
    box = (110.0, 100.0, 280.0, 300.0)
    (cx, cy), r = (195.0, 180.0), 40.0
    eyes = [(cx, cy), (cx + r * np.cos(np.radians(angle)), cy + r * np.sin(np.radians(angle)))]
    a = faces.alignment(box, eyes[0], eyes[1], margin=0.3)
    assert a.angle == pytest.approx(angle)
    (x, y), (w, h) = a.centre, a.size
    turned = (x - w / 2, y - h / 2, x + w / 2, y + h / 2, a.angle)
    ref = faces.aligned_crop(image, box, eyes, margin=0.3, out_size=(OUT_W, OUT_H))
    ours = loader_crops([path], [turned])[0]
    assert ours.shape == ref.shape == (OUT_H, OUT_W, 3)
    # Same map, same edge rule; the two bilinear samplers differ in their fixed-point weights.
    assert mean_abs_diff(ours, ref) < 0.5, mean_abs_diff(ours, ref)


@pytest.mark.parametrize("angle", [0.0, -20.0])
def test_cached_turned_crop_is_close_to_the_uncached(hopper, tmp_path: Path, angle: float) -> None:
    import cv2

    # Blurred: the cache resizes the image to the output's scale with antialiasing, the direct
    # warp samples it without; on fine detail the two would differ by design.
    image = cv2.GaussianBlur(hopper[0], (0, 0), 6.0)
    path = save_png(image, tmp_path / "blurred.png")
    box = [(60.0, 50.0, 330.0, 370.0, angle)]
    plain = loader_crops([path], box)[0]
    cached = loader_crops([path], box, cache=True)[0]
    assert mean_abs_diff(cached, plain) < 1.0, mean_abs_diff(cached, plain)


def test_turned_box_past_the_edge_repeats_the_edge_pixels(hopper, tmp_path: Path) -> None:
    image, _ = hopper
    path = save_png(image, tmp_path / "hopper.png")
    box, eyes = (-60.0, -40.0, 140.0, 160.0), [(0.0, 0.0), (10.0, 2.0)]
    a = faces.alignment(box, eyes[0], eyes[1])
    (x, y), (w, h) = a.centre, a.size
    ours = loader_crops([path], [(x - w / 2, y - h / 2, x + w / 2, y + h / 2, a.angle)])[0]
    ref = faces.aligned_crop(image, box, eyes, margin=0.0, out_size=(OUT_W, OUT_H))
    assert mean_abs_diff(ours, ref) < 0.5, mean_abs_diff(ours, ref)


def test_real_face_turned_15_degrees_comes_out_level(hopper, tmp_path: Path) -> None:
    image, head = hopper
    detector = faces.make_detector("mtcnn")
    turned = photos.rotate(image, 15.0, head.nose)
    path = save_png(turned, tmp_path / "turned.png")
    face = detector.detect(turned)
    assert face is not None and face.landmarks is not None
    before = align.eye_angle(face.landmarks[0], face.landmarks[1])
    assert before == pytest.approx(-15.0, abs=4)
    crop_box = aligned_box(face, 0.3)
    assert crop_box is not None and crop_box[4] == pytest.approx(before)
    ours = loader_crops([path], [crop_box], size=(224, 224))[0]
    again = detector.detect(ours)
    assert again is not None and again.landmarks is not None
    after = align.eye_angle(again.landmarks[0], again.landmarks[1])
    assert abs(after) <= 3.0, after
    ref = faces.aligned_crop(turned, face.box, face.landmarks, margin=0.3, out_size=(224, 224))
    assert mean_abs_diff(ours, ref) < 0.5, mean_abs_diff(ours, ref)


def test_turned_training_crops_are_seeded_whatever_the_threads(hopper, tmp_path: Path) -> None:
    image, _ = hopper
    paths = [save_png(image, tmp_path / f"{i}.png") for i in range(6)]
    boxes: list = [(110.0, 100.0, 280.0, 300.0, 10.0 * i - 20.0) for i in range(5)] + [None]
    kw = dict(size=(48, 48), train=True, augment="mask", seed=3, shuffle=False)
    one = loader_crops(paths, boxes, threads=1, **kw)
    two = loader_crops(paths, boxes, threads=2, **kw)
    cached = loader_crops(paths, boxes, threads=2, cache=True, **kw)
    assert np.array_equal(one, two)
    assert one.shape == cached.shape == (6, 48, 48, 3)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((0.0, 0.0, 10.0, 10.0, float("nan")), "angle NaN"),
        ((0.0, 0.0, 10.0, 10.0, 1e30), "within"),
        ((float("nan"), 0.0, 10.0, 10.0, 5.0), "finite coordinates"),
        ((0.0, 0.0, 1e9, 10.0, 5.0), "finite coordinates"),
        ((10.0, 0.0, 10.0, 10.0, 5.0), "empty"),
        ((0.0, 0.0, 10.0), "expected"),
    ],
)
def test_bad_turned_boxes_raise_naming_the_item(tmp_path: Path, box, message: str) -> None:
    paths = [save_png(np.zeros((20, 20, 3), np.uint8), tmp_path / f"{i}.png") for i in range(2)]
    with pytest.raises(ValueError, match=message) as err:
        Loader(paths, batch_size=2, image_size=8, train=False, crop_boxes=[None, box])
    assert "crop box 1" in str(err.value)
    from fastmask._native import augment_image

    if len(box) == 5:
        with pytest.raises(ValueError, match=message):
            augment_image(np.zeros((20, 20, 3), np.uint8), (8, 8), crop=box)
