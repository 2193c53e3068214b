"""``letterbox``/``unletterbox_boxes`` reproduce Ultralytics' LetterBox and scale_boxes exactly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from ultralytics.data.augment import LetterBox
from ultralytics.utils import ASSETS
from ultralytics.utils.ops import scale_boxes

from python_models.contract import DEFAULT_IMAGE_SIZE as IMAGE_SIZE
from python_models.contract import PAD_VALUE
from python_models.runtime.letterbox import LetterboxTransform, letterbox, unletterbox_boxes

SHAPES = [(1080, 810), (720, 1280), (480, 640), (1280, 480), (640, 640), (100, 3000), (1, 1), (333, 517)]


def image_of(height: int, width: int) -> np.ndarray:
    bus = cv2.imread(str(ASSETS / "bus.jpg"))
    return cv2.resize(bus, (width, height), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("size", [IMAGE_SIZE, 320, 1280])
@pytest.mark.parametrize("shape", SHAPES)
def test_letterbox_equals_ultralytics(shape, size):
    image = image_of(*shape)
    ours, _ = letterbox(image, size)
    ref = LetterBox(size)(image=image)
    ref = ref[..., ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    assert ours.shape == (3, size, size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_unletterbox_equals_scale_boxes(shape):
    height, width = shape
    _, transform = letterbox(image_of(height, width), IMAGE_SIZE)
    rng = np.random.default_rng(1)
    xy = rng.uniform(-20, IMAGE_SIZE + 20, (64, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 200, (64, 2))], axis=1).astype(np.float32)
    ref = scale_boxes((IMAGE_SIZE, IMAGE_SIZE), torch.from_numpy(boxes.copy()), (height, width)).numpy()
    np.testing.assert_allclose(unletterbox_boxes(boxes, transform), ref, rtol=1e-5, atol=1e-3)


def test_transform_places_the_image_and_pads_grey():
    image = image_of(1080, 810)
    out, t = letterbox(image, IMAGE_SIZE)
    assert (t.width, t.height) == (810, 1080)
    assert t.pad_y == 0 and t.pad_x == 80 and t.gain_x == pytest.approx(480 / 810)
    grey = np.float32(PAD_VALUE) / 255
    assert np.allclose(out[:, :, :80], grey, atol=1e-6) and np.allclose(out[:, :, 560:], grey, atol=1e-6)
    assert not np.allclose(out[:, :, 80:560], grey, atol=1e-6)
    # A box covering the letterboxed image content maps to the whole original image.
    full = unletterbox_boxes(np.array([[t.pad_x, t.pad_y, 560, 640]], np.float32), t)
    np.testing.assert_allclose(full[0], [0, 0, 810, 1080], atol=1e-3)


def test_transform_round_trips_through_its_array():
    _, t = letterbox(image_of(333, 517), IMAGE_SIZE)
    back = LetterboxTransform.from_array(t.to_array())
    assert np.allclose(back.to_array(), t.to_array()) and (back.width, back.height) == (517, 333)


def test_letterbox_fills_a_batch_row_in_place():
    batch = np.zeros((2, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    image = image_of(720, 1280)
    letterbox(image, IMAGE_SIZE, out=batch[1])
    np.testing.assert_array_equal(batch[1], letterbox(image, IMAGE_SIZE)[0])
    assert not batch[0].any()
