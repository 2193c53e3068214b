"""NMS and packing produce the contract's fixed-size outputs with Ultralytics' decisions."""

from __future__ import annotations

import numpy as np
import torch
from ultralytics.utils.nms import non_max_suppression

from python_models.contract import MAX_DETECTIONS, NUM_ANCHORS, NUM_CLASSES
from python_models.letterbox import LetterboxTransform
from python_models.nms import nms, pack_detections


def synthetic_raw(batch: int, seed: int = 0) -> np.ndarray:
    """Head output with a few strong, overlapping objects among low-score noise."""
    rng = np.random.default_rng(seed)
    raw = np.zeros((batch, 4 + NUM_CLASSES, NUM_ANCHORS), np.float32)
    raw[:, 0:2] = rng.uniform(0, 640, (batch, 2, NUM_ANCHORS))
    raw[:, 2:4] = rng.uniform(5, 120, (batch, 2, NUM_ANCHORS))
    raw[:, 4:] = rng.uniform(0, 0.2, (batch, NUM_CLASSES, NUM_ANCHORS))
    for b in range(batch):
        for k in range(12):
            anchors = rng.choice(NUM_ANCHORS, 5, replace=False)
            raw[b, 0:2, anchors] = rng.uniform(100, 500, 2) + rng.normal(0, 3, (5, 2))
            raw[b, 2:4, anchors] = 80 + rng.normal(0, 2, (5, 2))
            raw[b, 4 + k % NUM_CLASSES, anchors] = rng.uniform(0.3, 0.95, 5)
    return raw


def test_nms_equals_ultralytics():
    raw = synthetic_raw(3)
    ours = nms(raw)
    ref = non_max_suppression(torch.from_numpy(raw), 0.25, 0.45, max_det=MAX_DETECTIONS)
    assert any(len(o) for o in ours)
    for o, r in zip(ours, ref):
        np.testing.assert_allclose(o, r.numpy(), rtol=1e-6)
        assert np.all(np.diff(o[:, 4]) <= 0), "best score first"


def test_nms_caps_at_max_detections():
    rng = np.random.default_rng(2)
    raw = np.zeros((1, 4 + NUM_CLASSES, NUM_ANCHORS), np.float32)
    raw[0, 0:2] = rng.uniform(0, 640, (2, NUM_ANCHORS))
    raw[0, 2:4] = 2.0  # tiny boxes: nothing overlaps, so only the cap limits
    raw[0, 4] = rng.uniform(0.3, 1.0, NUM_ANCHORS)
    assert len(nms(raw)[0]) == MAX_DETECTIONS


def test_pack_maps_to_original_pixels_and_zero_fills():
    dets = [np.array([[80, 0, 560, 640, 0.9, 5]], np.float32), np.zeros((0, 6), np.float32)]
    t = LetterboxTransform(480 / 810, 640 / 1080, 80, 0, 810, 1080)
    packed = pack_detections(dets, [t, t])
    assert packed["num_detections"].tolist() == [[1], [0]]
    np.testing.assert_allclose(packed["detection_boxes"][0, 0], [0, 0, 810, 1080], atol=1e-3)
    assert packed["detection_classes"][0, 0] == 5 and packed["detection_classes"].dtype == np.int32
    assert not packed["detection_boxes"][0, 1:].any() and not packed["detection_boxes"][1].any()
    assert packed["detection_scores"].shape == (2, MAX_DETECTIONS)
