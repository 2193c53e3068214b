"""TensorRT's ``EfficientNMS_TRT`` plugin, as documented, for running the End2End graph off the GPU.

The CPU profile runs the very ONNX graph TensorRT builds the End2End engine from;
ONNX Runtime has no such op, so this supplies it, following the plugin's README
(TensorRT ``plugin/efficientNMSPlugin``): scores under ``score_threshold`` are
dropped, the rest sorted, only the best ``PRE_NMS_TOP_K`` enter NMS, NMS is per
class unless ``class_agnostic``, at most ``max_output_boxes`` survive, best first,
boxes always come out as corners, and rows past ``num_detections`` are zero.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import batched_nms

from python_models.export.end2end import BOX_CENTER_SIZE, BOX_CORNERS, EfficientNMSAttributes

PRE_NMS_TOP_K = 4096
"""The plugin's NMS kernel takes at most this many of the best-scoring candidates per image."""


def corners(boxes: np.ndarray, box_coding: int) -> np.ndarray:
    """``[..., 4]`` boxes as x1, y1, x2, y2."""
    if box_coding == BOX_CORNERS:
        return boxes
    if box_coding != BOX_CENTER_SIZE:
        raise ValueError(f"box_coding must be 0 (corners) or 1 (centre-size), not {box_coding}")
    centre, half = boxes[..., :2], boxes[..., 2:] / 2
    return np.concatenate([centre - half, centre + half], axis=-1)


def efficient_nms(
    boxes: np.ndarray, scores: np.ndarray, attrs: EfficientNMSAttributes
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``num_detections`` int32 [B, 1], ``detection_boxes`` [B, K, 4], ``detection_scores`` [B, K], ``detection_classes`` int32 [B, K].

    ``boxes`` is ``[B, N, 4]`` (shared by all classes) or ``[B, N, C, 4]`` (one per class);
    ``scores`` is ``[B, N, C]``.
    """
    if scores.ndim != 3:
        raise ValueError(f"scores must be [batch, boxes, classes], got shape {scores.shape}")
    batch, count, classes = scores.shape
    if boxes.shape[:2] != (batch, count) or boxes.shape[-1] != 4 or boxes.ndim not in (3, 4):
        raise ValueError(f"boxes {boxes.shape} do not match scores {scores.shape}")
    if boxes.ndim == 4 and boxes.shape[2] != classes:
        raise ValueError(f"per-class boxes {boxes.shape} need {classes} classes")
    k = attrs.max_output_boxes
    dtype = scores.dtype
    num = np.zeros((batch, 1), np.int32)
    out_boxes = np.zeros((batch, k, 4), dtype)
    out_scores = np.zeros((batch, k), dtype)
    out_classes = np.zeros((batch, k), np.int32)
    for b in range(batch):
        image_scores = scores[b].astype(np.float32)
        if attrs.score_activation:
            image_scores = 1 / (1 + np.exp(-image_scores))
        if 0 <= attrs.background_class < classes:
            image_scores[:, attrs.background_class] = -np.inf
        anchor, cls = np.nonzero(image_scores >= attrs.score_threshold)
        if len(anchor) == 0:
            continue
        kept_scores = image_scores[anchor, cls]
        top = np.argsort(-kept_scores, kind="stable")[:PRE_NMS_TOP_K]
        anchor, cls, kept_scores = anchor[top], cls[top], kept_scores[top]
        candidates = boxes[b, anchor] if boxes.ndim == 3 else boxes[b, anchor, cls]
        candidates = corners(candidates.astype(np.float32), attrs.box_coding)
        groups = np.zeros_like(cls) if attrs.class_agnostic else cls
        # torchvision returns the survivors best first, suppressing IoU > threshold, as the plugin does.
        keep = batched_nms(torch.from_numpy(candidates), torch.from_numpy(kept_scores),
                           torch.from_numpy(groups), attrs.iou_threshold).numpy()[:k]
        n = len(keep)
        num[b, 0] = n
        out_boxes[b, :n] = candidates[keep]
        out_scores[b, :n] = kept_scores[keep]
        out_classes[b, :n] = cls[keep]
    return num, out_boxes, out_scores, out_classes
