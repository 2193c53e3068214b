"""Compare two detection sets the way a user would: same objects, same classes, same boxes, same scores."""

from __future__ import annotations

import numpy as np

from python_models.client import Detections
from python_models.contract import CONF_THRESHOLD, MAX_DETECTIONS


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, (len(a), len(b))."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def tolerance(model: str) -> tuple[float, float]:
    """(min IoU, score tolerance) of a track against the Ultralytics predictor or Track A.

    Tracks A, B and C decode and letterbox with OpenCV exactly as the predictor does;
    Track D's DALI decode and resize differ from OpenCV's by up to one grey level.
    """
    return (0.95, 2e-3) if model.startswith("yolo11_dali_") else (0.98, 2e-3 if model == "yolo11_trt_end2end" else 1e-3)


def _unmatched(src: Detections, dst: Detections, min_iou: float, score_tol: float) -> list[int]:
    """Rows of ``src`` with no partner in ``dst``, ignoring rows a rounding difference may drop.

    A detection within ``score_tol`` of the confidence threshold, or of the last
    score kept when the list is full, may exist on one side only.
    """
    floor = CONF_THRESHOLD + score_tol
    if len(src) == MAX_DETECTIONS:
        floor = max(floor, float(src.scores.min()) + score_tol)
    iou = box_iou(src.boxes, dst.boxes) if len(src) and len(dst) else np.zeros((len(src), len(dst)))
    missing = []
    for i in range(len(src)):
        if src.scores[i] < floor:
            continue
        # Boxes clipped to nothing at the image border have no area and so no IoU: compare corners.
        same_box = (iou[i] >= min_iou) | (np.abs(dst.boxes - src.boxes[i]).max(1, initial=0) <= 0.5)
        ok = (dst.classes == src.classes[i]) & same_box & (np.abs(dst.scores - src.scores[i]) <= score_tol)
        if not ok.any():
            missing.append(i)
    return missing


def assert_same_detections(got: Detections, ref: Detections, min_iou: float, score_tol: float, what: str = "") -> None:
    assert len(ref) > 0, f"{what}: the reference found nothing, so a comparison would prove nothing"
    assert np.all(got.boxes[:, 2:] >= got.boxes[:, :2]), f"{what}: boxes are not x1 <= x2, y1 <= y2"
    for src, dst, side in ((ref, got, "reference detection"), (got, ref, "served detection")):
        missing = _unmatched(src, dst, min_iou, score_tol)
        assert not missing, (
            f"{what}: {len(missing)} {side}(s) without a match (class, IoU >= {min_iou}, score within {score_tol}); "
            f"first: class {src.classes[missing[0]]} score {src.scores[missing[0]]:.4f} box {src.boxes[missing[0]]}; "
            f"{len(got)} served vs {len(ref)} reference"
        )


def reference_detections(model, image_path) -> Detections:
    from python_models.contract import IMAGE_SIZE, IOU_THRESHOLD

    result = model.predict(str(image_path), imgsz=IMAGE_SIZE, conf=CONF_THRESHOLD, iou=IOU_THRESHOLD,
                           max_det=MAX_DETECTIONS, rect=False, verbose=False)[0]
    boxes = result.boxes
    return Detections(boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy().astype(np.int32))
