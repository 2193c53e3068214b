"""Test-side comparisons: python_models.matching with assertions, tolerances per track, the predictor reference."""

from __future__ import annotations

import numpy as np

from python_models.client import Detections
from python_models.contract import CONF_THRESHOLD, MAX_DETECTIONS
from python_models.matching import differences, tolerance  # noqa: F401 - the tests' tolerances are the check's


def assert_same_detections(got: Detections, ref: Detections, min_iou: float, score_tol: float, what: str = "") -> None:
    assert len(ref) > 0, f"{what}: the reference found nothing, so a comparison would prove nothing"
    problems = differences(got, ref, min_iou, score_tol)
    assert not problems, f"{what}: " + "; ".join(problems)


def reference_detections(model, image_path) -> Detections:
    from python_models.contract import IMAGE_SIZE, IOU_THRESHOLD

    result = model.predict(str(image_path), imgsz=IMAGE_SIZE, conf=CONF_THRESHOLD, iou=IOU_THRESHOLD,
                           max_det=MAX_DETECTIONS, rect=False, verbose=False)[0]
    boxes = result.boxes
    return Detections(boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy().astype(np.int32))
