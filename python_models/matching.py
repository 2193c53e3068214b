"""Compare two detection sets the way a user would: same objects, same classes, same boxes, same scores."""

from __future__ import annotations

import numpy as np

from python_models.client import Detections
from python_models.contract import CONF_THRESHOLD, MAX_DETECTIONS


TOLERANCES = {
    # precision -> (reference kind) -> (min IoU, score tolerance)
    "fp32": {"predictor": (0.98, 1e-3), "end2end": (0.98, 2e-3), "dali": (0.95, 2e-3), "other": (0.98, 1e-3)},
    "fp16": {"predictor": (0.95, 5e-3), "end2end": (0.90, 1e-2), "dali": (0.90, 1e-2), "other": (0.90, 1e-2)},
}
"""FP32: what CI proves in the CPU profile. Tracks A, B and C decode and letterbox with OpenCV exactly as
the predictor does; Track D's DALI decode and resize differ from OpenCV's by up to one grey level. FP16:
Track A against the predictor at FP16 on the same GPU (measured on an H100: every pair within 5e-3); the
TensorRT tracks against Track A at FP16 compute in other kernels, so their tolerance is wider and has
not yet been measured on a GPU host."""


def tolerance(model: str, precision: str = "fp32", against: str = "track_a") -> tuple[float, float]:
    """(min IoU, score tolerance) of ``model``'s detections against Track A, or against the Ultralytics
    predictor (``against="predictor"``), at the served ``precision``."""
    table = TOLERANCES[precision]
    if against == "predictor":
        return table["predictor"]
    if model.startswith("yolo11_dali_"):
        return table["dali"]
    return table["end2end"] if model == "yolo11_trt_end2end" else table["other"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, (len(a), len(b))."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def unmatched(src: Detections, dst: Detections, min_iou: float, score_tol: float) -> list[int]:
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


def differences(got: Detections, ref: Detections, min_iou: float, score_tol: float) -> list[str]:
    """Why ``got`` is not the same detections as ``ref``; empty when it is."""
    problems = []
    if len(got) and not np.all(got.boxes[:, 2:] >= got.boxes[:, :2]):
        problems.append("boxes are not x1 <= x2, y1 <= y2")
    for src, dst, side in ((ref, got, "reference detection"), (got, ref, "served detection")):
        missing = unmatched(src, dst, min_iou, score_tol)
        if missing:
            first = missing[0]
            problems.append(
                f"{len(missing)} {side}(s) without a match (class, IoU >= {min_iou}, score within {score_tol}); "
                f"first: class {src.classes[first]} score {src.scores[first]:.4f} box {src.boxes[first]}; "
                f"{len(got)} served vs {len(ref)} reference")
    return problems


def max_score_difference(got: Detections, ref: Detections, min_iou: float) -> float | None:
    """Largest score difference between a reference detection and its best same-class partner (IoU >= ``min_iou``);
    None when no pair matches."""
    if not len(got) or not len(ref):
        return None
    iou = box_iou(ref.boxes, got.boxes)
    iou[ref.classes[:, None] != got.classes[None, :]] = -1
    best = iou.argmax(1)
    paired = iou[np.arange(len(ref)), best] >= min_iou
    if not paired.any():
        return None
    return float(np.abs(ref.scores[paired] - got.scores[best[paired]]).max())
