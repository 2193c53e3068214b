"""The parity report's score difference pairs detections by class and overlap, not by position in the list."""

from __future__ import annotations

import numpy as np

from python_models.client import Detections
from python_models.client.matching import differences, max_score_difference
from python_models.contract import ModelSpec

SPEC = ModelSpec(names=tuple(f"class{i}" for i in range(80)))


def detections(rows: list[tuple[float, float, float, float, float, int]]) -> Detections:
    array = np.array([r[:5] for r in rows], np.float32).reshape(-1, 5)
    return Detections(array[:, :4], array[:, 4], np.array([r[5] for r in rows], np.int32))


def test_score_difference_pairs_by_class_and_iou_even_when_one_side_has_an_extra_row():
    ref = detections([(0, 0, 100, 100, 0.90, 0), (200, 200, 300, 300, 0.50, 5)])
    got = detections([(200, 200, 300, 300, 0.52, 5), (0, 0, 100, 100, 0.89, 0), (400, 400, 410, 410, 0.251, 2)])
    assert abs(max_score_difference(got, ref, 0.95) - 0.02) < 1e-6
    assert differences(got, ref, SPEC, 0.95, 0.03) == []  # the extra row sits at the threshold
    assert differences(got, ref, SPEC, 0.95, 0.01), "a score off by 0.02 fails a 0.01 tolerance"


def test_score_difference_is_none_when_nothing_pairs():
    ref = detections([(0, 0, 100, 100, 0.9, 0)])
    assert max_score_difference(detections([(0, 0, 100, 100, 0.9, 1)]), ref, 0.95) is None
    assert max_score_difference(detections([]), ref, 0.95) is None


def test_extra_and_duplicated_detections_are_differences():
    ref = detections([(0, 0, 100, 100, 0.90, 0), (200, 200, 300, 300, 0.80, 5)])
    tripled = detections([*[(0, 0, 100, 100, 0.90, 0)] * 3, *[(200, 200, 300, 300, 0.80, 5)] * 3])
    problems = differences(tripled, ref, SPEC, 0.95, 1e-3)
    assert problems and "4 served detection(s) without a partner" in problems[0] and "6 served vs 2 reference" in problems[0]
    assert differences(ref, tripled, SPEC, 0.95, 1e-3), "the other way round: reference detections left without a partner"
    assert differences(ref, ref, SPEC, 0.95, 1e-3) == []


def test_pairing_is_one_to_one_and_prefers_the_best_overlap():
    from python_models.client.matching import pairs

    ref = detections([(0, 0, 100, 100, 0.9, 0), (5, 5, 105, 105, 0.8, 0)])
    got = detections([(5, 5, 105, 105, 0.8, 0), (0, 0, 100, 100, 0.9, 0)])
    assert pairs(ref, got, 0.5, 0.2) == {0: 1, 1: 0}


def test_the_unpaired_share_allows_a_few_flips_not_a_wrong_answer():
    ref = detections([(10 * i, 0, 10 * i + 8, 8, 0.5, 0) for i in range(40)])
    flipped = detections([(10 * i, 0, 10 * i + 8, 8, 0.5, 1 if i == 7 else 0) for i in range(40)])
    assert differences(flipped, ref, SPEC, 0.95, 1e-3), "no flip allowed by default"
    assert differences(flipped, ref, SPEC, 0.95, 1e-3, 0.05) == [], "one flip in 40 is within 5%"
    many = detections([(10 * i, 0, 10 * i + 8, 8, 0.5, i % 2) for i in range(40)])
    assert differences(many, ref, SPEC, 0.95, 1e-3, 0.05), "half the classes wrong is not a flip"
