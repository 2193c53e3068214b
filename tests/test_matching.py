"""The parity report's score difference pairs detections by class and overlap, not by position in the list."""

from __future__ import annotations

import numpy as np

from python_models.client import Detections
from python_models.matching import differences, max_score_difference


def detections(rows: list[tuple[float, float, float, float, float, int]]) -> Detections:
    array = np.array([r[:5] for r in rows], np.float32).reshape(-1, 5)
    return Detections(array[:, :4], array[:, 4], np.array([r[5] for r in rows], np.int32))


def test_score_difference_pairs_by_class_and_iou_even_when_one_side_has_an_extra_row():
    ref = detections([(0, 0, 100, 100, 0.90, 0), (200, 200, 300, 300, 0.50, 5)])
    got = detections([(200, 200, 300, 300, 0.52, 5), (0, 0, 100, 100, 0.89, 0), (400, 400, 410, 410, 0.251, 2)])
    assert abs(max_score_difference(got, ref, 0.95) - 0.02) < 1e-6
    assert differences(got, ref, 0.95, 0.03) == []  # the extra row sits at the threshold
    assert differences(got, ref, 0.95, 0.01), "a score off by 0.02 fails a 0.01 tolerance"


def test_score_difference_is_none_when_nothing_pairs():
    ref = detections([(0, 0, 100, 100, 0.9, 0)])
    assert max_score_difference(detections([(0, 0, 100, 100, 0.9, 1)]), ref, 0.95) is None
    assert max_score_difference(detections([]), ref, 0.95) is None
