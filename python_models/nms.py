"""Non-maximum suppression over the YOLO11 head output and packing into the public contract.

NMS is Ultralytics' own ``non_max_suppression`` (torchvision's ``nms`` inside), so
Track A and Track B make exactly the decisions the Ultralytics predictor makes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision  # noqa: F401 - Ultralytics uses torchvision's C++ NMS only when it is imported, else a slow Python loop
from ultralytics.utils.nms import non_max_suppression

from python_models.contract import (
    CONF_THRESHOLD,
    IOU_THRESHOLD,
    MAX_DETECTIONS,
    OUTPUT_BOXES,
    OUTPUT_CLASSES,
    OUTPUT_NUM_DETECTIONS,
    OUTPUT_SCORES,
)
from python_models.letterbox import LetterboxTransform, unletterbox_boxes


def nms(raw: np.ndarray | torch.Tensor) -> list[np.ndarray]:
    """Per image, an (n, 6) float32 array of x1, y1, x2, y2, score, class in letterboxed pixels.

    ``raw`` is the head output ``[B, 4 + classes, anchors]``: centre-x, centre-y, w, h, class scores.
    At most ``MAX_DETECTIONS`` rows per image, best score first.
    """
    prediction = torch.as_tensor(raw)
    kept = non_max_suppression(
        prediction.float(), CONF_THRESHOLD, IOU_THRESHOLD, max_det=MAX_DETECTIONS
    )
    return [k.cpu().numpy().astype(np.float32, copy=False) for k in kept]


def pack_detections(
    detections: Sequence[np.ndarray], transforms: Sequence[LetterboxTransform]
) -> dict[str, np.ndarray]:
    """Fixed-size public outputs for a batch: boxes in original-image pixels, rows past the count zero."""
    batch = len(detections)
    num = np.zeros((batch, 1), dtype=np.int32)
    boxes = np.zeros((batch, MAX_DETECTIONS, 4), dtype=np.float32)
    scores = np.zeros((batch, MAX_DETECTIONS), dtype=np.float32)
    classes = np.zeros((batch, MAX_DETECTIONS), dtype=np.int32)
    for row, (dets, transform) in enumerate(zip(detections, transforms)):
        n = min(len(dets), MAX_DETECTIONS)
        num[row, 0] = n
        if n:
            boxes[row, :n] = unletterbox_boxes(dets[:n, :4], transform)
            scores[row, :n] = dets[:n, 4]
            classes[row, :n] = dets[:n, 5].astype(np.int32)
    return {OUTPUT_NUM_DETECTIONS: num, OUTPUT_BOXES: boxes, OUTPUT_SCORES: scores, OUTPUT_CLASSES: classes}
