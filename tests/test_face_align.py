"""The eyes-level face crop: the pure geometry, and a real face turned by 15 degrees."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastmask import faces
from fastmask.faces import align, photos


def test_eye_angle_follows_the_image_axes() -> None:
    assert align.eye_angle((10, 10), (20, 10)) == 0.0
    # Right eye lower (y grows down): the face leans clockwise as seen, angle positive.
    assert align.eye_angle((10, 10), (20, 20)) == pytest.approx(45.0)
    assert align.eye_angle((10, 10), (20, 0)) == pytest.approx(-45.0)
    assert align.eye_angle((5, 5), (5, 5)) == 0.0


def test_alignment_is_the_box_centre_grown_by_the_margin() -> None:
    a = faces.alignment((10, 20, 50, 100), (20, 40), (40, 40), margin=0.25)
    assert a == align.Alignment(centre=(30.0, 60.0), size=(60.0, 120.0), angle=0.0)
    with pytest.raises(ValueError, match="is empty"):
        faces.alignment((10, 20, 10, 100), (0, 0), (1, 0))
    with pytest.raises(ValueError, match="margin"):
        faces.alignment((0, 0, 10, 10), (0, 0), (1, 0), margin=-0.1)


def test_level_eyes_give_the_plain_crop() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    box = (10, 20, 42, 44)
    landmarks = [(18, 28), (34, 28)]
    crop = faces.aligned_crop(image, box, landmarks, margin=0.0, out_size=(32, 24))
    assert np.array_equal(crop, image[20:44, 10:42])


def test_crop_matrix_maps_the_output_centre_to_the_box_centre_turned() -> None:
    a = align.Alignment(centre=(100.0, 80.0), size=(40.0, 60.0), angle=30.0)
    m = faces.crop_matrix(a, (20, 30))
    # Output centre (pixel-centre coordinates 9.5, 14.5) -> source centre (99.5, 79.5).
    assert m @ np.array([9.5, 14.5, 1.0]) == pytest.approx([99.5, 79.5])
    # One output pixel along x is 2 source pixels along the turned x axis.
    step = m[:, 0]
    assert step == pytest.approx([2 * math.cos(math.radians(30)), 2 * math.sin(math.radians(30))])
    with pytest.raises(ValueError, match="out_size"):
        faces.crop_matrix(a, (0, 10))


@pytest.mark.parametrize("turn", [15.0, -15.0])
def test_real_face_turned_comes_out_with_level_eyes(turn: float) -> None:
    pytest.importorskip("skimage.data")
    detector = faces.make_detector("mtcnn")
    bare = next(p for p in photos.photo_set() if p.name == "grace_hopper")
    assert bare.head is not None
    turned = photos.rotate(bare.image, turn, bare.head.nose)
    face = detector.detect(turned)
    assert face is not None and face.landmarks is not None
    before = align.eye_angle(face.landmarks[0], face.landmarks[1])
    # cv2 turns anticlockwise as seen for a positive angle: the eye line goes to -turn.
    assert before == pytest.approx(-turn, abs=4)
    crop = faces.aligned_crop(turned, face.box, face.landmarks, margin=0.3, out_size=(224, 224))
    again = detector.detect(crop)
    assert again is not None and again.landmarks is not None
    assert abs(align.eye_angle(again.landmarks[0], again.landmarks[1])) <= 3.0


def test_aligned_crop_refuses_bad_input() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="two eye landmarks"):
        faces.aligned_crop(image, (0, 0, 5, 5), [(1, 1)])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        faces.aligned_crop(image.astype(np.float32), (0, 0, 5, 5), [(1, 1), (3, 1)])
