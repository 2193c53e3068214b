"""The CPU stand-in for TensorRT's EfficientNMS_TRT follows the plugin's documented semantics."""

from __future__ import annotations

import numpy as np
import pytest

from python_models.serving.twins.efficient_nms import (
    BOX_CENTER_SIZE,
    BOX_CORNERS,
    PRE_NMS_TOP_K,
    EfficientNMSAttributes,
    efficient_nms,
)


def attrs(**overrides) -> EfficientNMSAttributes:
    values = dict(score_threshold=0.25, iou_threshold=0.45, max_output_boxes=100)
    values.update(overrides)
    return EfficientNMSAttributes(**values)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    return float(inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter))


def greedy_reference(boxes, scores, threshold, iou_threshold, k, agnostic=False):
    """Textbook greedy NMS over (box, class) candidates, written independently of the implementation."""
    candidates = sorted(
        ((scores[n, c], n, c) for n in range(len(boxes)) for c in range(scores.shape[1]) if scores[n, c] >= threshold),
        key=lambda t: -t[0],
    )[:PRE_NMS_TOP_K]
    kept = []
    for score, n, c in candidates:
        if all(iou(boxes[n], boxes[m]) <= iou_threshold for _, m, kc in kept if agnostic or kc == c):
            kept.append((score, n, c))
    return kept[:k]


def random_case(seed: int, count: int = 300, classes: int = 5):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 600, (count, 2))
    wh = rng.uniform(10, 120, (count, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, (count, classes)).astype(np.float32) ** 3
    return boxes, scores


@pytest.mark.parametrize("agnostic", [0, 1])
def test_matches_textbook_greedy_nms(agnostic):
    boxes, scores = random_case(1)
    num, out_boxes, out_scores, out_classes = efficient_nms(boxes[None], scores[None], attrs(class_agnostic=agnostic))
    ref = greedy_reference(boxes, scores, 0.25, 0.45, 100, agnostic=bool(agnostic))
    assert num[0, 0] == len(ref) > 10
    np.testing.assert_allclose(out_scores[0, : len(ref)], [s for s, _, _ in ref])
    np.testing.assert_array_equal(out_classes[0, : len(ref)], [c for _, _, c in ref])
    np.testing.assert_allclose(out_boxes[0, : len(ref)], boxes[[n for _, n, _ in ref]])


def test_output_layout_dtypes_and_zero_padding():
    boxes, scores = random_case(2, count=40)
    num, out_boxes, out_scores, out_classes = efficient_nms(np.stack([boxes, boxes]), np.stack([scores, scores * 0]), attrs())
    assert num.dtype == np.int32 and num.shape == (2, 1)
    assert out_boxes.dtype == np.float32 and out_boxes.shape == (2, 100, 4)
    assert out_scores.dtype == np.float32 and out_scores.shape == (2, 100)
    assert out_classes.dtype == np.int32 and out_classes.shape == (2, 100)
    n = num[0, 0]
    assert 0 < n < 100 and num[1, 0] == 0, "the second image has no score above the threshold"
    assert np.all(np.diff(out_scores[0, :n]) <= 0), "best first"
    assert not out_boxes[0, n:].any() and not out_scores[0, n:].any() and not out_classes[0, n:].any()
    assert not out_boxes[1].any()


def test_per_class_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = np.array([[[0, 0, 100, 100], [5, 5, 100, 100]]], np.float32)
    scores = np.array([[[0.9, 0.0], [0.0, 0.8]]], np.float32)
    assert efficient_nms(boxes, scores, attrs())[0][0, 0] == 2
    assert efficient_nms(boxes, scores, attrs(class_agnostic=1))[0][0, 0] == 1
    same_class = np.array([[[0.9, 0.0], [0.8, 0.0]]], np.float32)
    num, _, out_scores, _ = efficient_nms(boxes, same_class, attrs())
    assert num[0, 0] == 1 and out_scores[0, 0] == pytest.approx(0.9)


def test_threshold_keeps_scores_at_or_above_it():
    boxes = np.array([[[0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]]], np.float32)
    scores = np.array([[[0.25], [0.2499], [0.7]]], np.float32)
    num, _, out_scores, _ = efficient_nms(boxes, scores, attrs())
    assert num[0, 0] == 2
    np.testing.assert_allclose(out_scores[0, :2], [0.7, 0.25])


def test_max_output_boxes_caps_the_count():
    rng = np.random.default_rng(3)
    xy = np.stack(np.meshgrid(np.arange(30), np.arange(30)), -1).reshape(-1, 2).astype(np.float32) * 20
    boxes = np.concatenate([xy, xy + 5], 1)[None]  # a grid of boxes that never overlap
    scores = rng.uniform(0.3, 1, (1, len(xy), 1)).astype(np.float32)
    num, _, out_scores, _ = efficient_nms(boxes, scores, attrs(max_output_boxes=7))
    assert num[0, 0] == 7 and out_scores.shape == (1, 7)
    np.testing.assert_allclose(out_scores[0], np.sort(scores[0, :, 0])[::-1][:7])


def test_only_the_best_4096_candidates_enter_nms():
    side = 70  # 4900 disjoint boxes, all above the threshold
    xy = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2).astype(np.float32) * 10
    boxes = np.concatenate([xy, xy + 5], 1)[None]
    scores = np.linspace(0.3, 0.9, side * side, dtype=np.float32)[None, :, None]
    num, _, out_scores, _ = efficient_nms(boxes, scores, attrs(max_output_boxes=side * side))
    assert num[0, 0] == PRE_NMS_TOP_K
    assert out_scores[0, PRE_NMS_TOP_K - 1] == pytest.approx(np.sort(scores.ravel())[::-1][PRE_NMS_TOP_K - 1])


def test_centre_size_coding_gives_the_same_result_as_corners_and_outputs_corners():
    boxes, scores = random_case(4)
    centre = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
    by_corners = efficient_nms(boxes[None], scores[None], attrs(box_coding=BOX_CORNERS))
    by_centre = efficient_nms(centre[None], scores[None], attrs(box_coding=BOX_CENTER_SIZE))
    assert by_corners[0][0, 0] > 0
    for a, b in zip(by_corners, by_centre):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_background_class_is_never_reported():
    boxes, scores = random_case(5)
    num, _, _, classes = efficient_nms(boxes[None], scores[None], attrs(background_class=0))
    assert num[0, 0] > 0 and not np.any(classes[0, : num[0, 0]] == 0)


def test_score_activation_applies_the_sigmoid_before_thresholding():
    boxes = np.array([[[0, 0, 10, 10], [50, 50, 60, 60]]], np.float32)
    logits = np.array([[[2.0], [-2.0]]], np.float32)  # sigmoid: 0.88 and 0.12
    num, _, out_scores, _ = efficient_nms(boxes, logits, attrs(score_activation=1))
    assert num[0, 0] == 1 and out_scores[0, 0] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-6)


def test_per_class_boxes_are_taken_for_their_class():
    boxes = np.zeros((1, 1, 2, 4), np.float32)
    boxes[0, 0, 0] = [0, 0, 10, 10]
    boxes[0, 0, 1] = [100, 100, 150, 150]
    scores = np.array([[[0.1, 0.9]]], np.float32)
    num, out_boxes, _, out_classes = efficient_nms(boxes, scores, attrs())
    assert num[0, 0] == 1 and out_classes[0, 0] == 1
    np.testing.assert_array_equal(out_boxes[0, 0], [100, 100, 150, 150])


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        efficient_nms(np.zeros((1, 5, 4), np.float32), np.zeros((1, 6, 3), np.float32), attrs())
    with pytest.raises(ValueError, match="box_coding"):
        efficient_nms(np.ones((1, 1, 4), np.float32), np.ones((1, 1, 1), np.float32), attrs(box_coding=2))
