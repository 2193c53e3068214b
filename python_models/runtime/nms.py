"""Non-maximum suppression over the YOLO11 head output and packing into the public contract.

``nms`` makes exactly the decisions of Ultralytics' ``non_max_suppression`` (best
class per anchor, confidence filter, per-class offset of ``max_wh``, torchvision's
``nms``), computed the same way in float32, but for the whole batch at once: the
candidate filter, box conversion and class offsets are one set of tensor ops where
the head output is, the candidates cross to the host in one copy, and only
torchvision's ``nms`` runs per image, on the host. Ultralytics' loop runs a dozen
small ops per image and stops processing images once its wall-clock limit (2 s +
50 ms per image) has passed, which under a loaded server would silently return
empty detections for the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision
from ultralytics.utils.ops import xywh2xyxy

from python_models.contract import OUTPUT_BOXES, OUTPUT_CLASSES, OUTPUT_NUM_DETECTIONS, OUTPUT_SCORES, ModelSpec
from python_models.runtime.preprocess import LetterboxTransform, unletterbox_boxes

CLASS_OFFSET = 7680
"""Ultralytics' ``max_wh``: boxes of different classes are shifted this far apart so one NMS never merges them."""


def nms(raw: np.ndarray | torch.Tensor, spec: ModelSpec) -> list[np.ndarray]:
    """Per image, an (n, 6) float32 array of x1, y1, x2, y2, score, class in letterboxed pixels.

    ``raw`` is the head output ``[B, 4 + classes, anchors]``: centre-x, centre-y, w, h, class scores.
    Scores above ``spec.conf``, boxes suppressed at ``spec.iou``, at most ``spec.max_det`` rows per image,
    best score first.
    """
    prediction = torch.as_tensor(raw).float()
    batch = prediction.shape[0]
    # amax over the head's own layout is several times cheaper on a CPU than max with indices; the class
    # index is then taken over the few candidates only, as Ultralytics does.
    image, anchor = (prediction[:, 4:].amax(1) > spec.conf).nonzero(as_tuple=True)  # image-major, anchors in order
    candidates = prediction[image, :, anchor]  # [n, 4 + classes]
    boxes = xywh2xyxy(candidates[:, :4])
    conf, cls = candidates[:, 4:].max(1)
    cls = cls.float()
    shifted = boxes + cls[:, None] * CLASS_OFFSET
    if shifted.is_cuda:
        # A few dozen candidates per image: on the GPU every per-image ``nms`` call waits for the device (one
        # sync each), on the host it takes microseconds. One copy brings them over.
        shifted, boxes, conf, cls = torch.cat((shifted, boxes, conf[:, None], cls[:, None]), 1).cpu().split((4, 4, 1, 1), 1)
        conf, cls, image = conf.flatten(), cls.flatten(), image.cpu()
    kept, counts, start = [], [], 0
    for candidates in torch.bincount(image, minlength=batch).tolist():
        if candidates:
            keep = torchvision.ops.nms(shifted[start:start + candidates], conf[start:start + candidates], spec.iou)
            kept.append(keep[:spec.max_det] + start)
        counts.append(len(kept[-1]) if candidates else 0)
        start += candidates
    if not kept:
        return [np.zeros((0, 6), np.float32) for _ in range(batch)]
    rows = torch.cat((boxes, conf[:, None], cls[:, None]), 1)[torch.cat(kept)].cpu().numpy()
    return np.split(rows, np.cumsum(counts)[:-1])


def pack_detections(
    detections: Sequence[np.ndarray], transforms: Sequence[LetterboxTransform], max_det: int
) -> dict[str, np.ndarray]:
    """Fixed-size public outputs for a batch (``max_det`` rows): boxes in original-image pixels, rows past the
    count zero."""
    batch = len(detections)
    num = np.zeros((batch, 1), dtype=np.int32)
    boxes = np.zeros((batch, max_det, 4), dtype=np.float32)
    scores = np.zeros((batch, max_det), dtype=np.float32)
    classes = np.zeros((batch, max_det), dtype=np.int32)
    for row, (dets, transform) in enumerate(zip(detections, transforms)):
        n = min(len(dets), max_det)
        num[row, 0] = n
        if n:
            boxes[row, :n] = unletterbox_boxes(dets[:n, :4], transform)
            scores[row, :n] = dets[:n, 4]
            classes[row, :n] = dets[:n, 5].astype(np.int32)
    return {OUTPUT_NUM_DETECTIONS: num, OUTPUT_BOXES: boxes, OUTPUT_SCORES: scores, OUTPUT_CLASSES: classes}
