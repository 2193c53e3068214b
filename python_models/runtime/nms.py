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

``nms_on_device`` makes the same decisions without leaving the head output's device: the whole batch's
suppression at once (``greedy_keep``), the boxes mapped to original-image pixels and packed there, and one
copy of the contract's rows back to the host. On a GPU that replaces a synchronisation and a host NMS
call per image with a few per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision
from ultralytics.utils.ops import xywh2xyxy

from python_models.contract import OUTPUT_BOXES, OUTPUT_CLASSES, OUTPUT_NUM_DETECTIONS, OUTPUT_SCORES, ModelSpec
from python_models.runtime.letterbox import LetterboxTransform, unletterbox_boxes

CLASS_OFFSET = 7680
"""Ultralytics' ``max_wh``: boxes of different classes are shifted this far apart so one NMS never merges them."""


def candidates_of(prediction: torch.Tensor, spec: ModelSpec
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The head output's rows above ``spec.conf``, image-major and anchors in order: image index, xyxy box in
    letterboxed pixels, best score and its class (float), as Ultralytics takes them."""
    # amax over the head's own layout is several times cheaper on a CPU than max with indices; the class
    # index is then taken over the few candidates only, as Ultralytics does.
    image, anchor = (prediction[:, 4:].amax(1) > spec.conf).nonzero(as_tuple=True)
    candidates = prediction[image, :, anchor]  # [n, 4 + classes]
    conf, cls = candidates[:, 4:].max(1)
    return image, xywh2xyxy(candidates[:, :4]), conf, cls.float()


def nms(raw: np.ndarray | torch.Tensor, spec: ModelSpec) -> list[np.ndarray]:
    """Per image, an (n, 6) float32 array of x1, y1, x2, y2, score, class in letterboxed pixels.

    ``raw`` is the head output ``[B, 4 + classes, anchors]``: centre-x, centre-y, w, h, class scores.
    Scores above ``spec.conf``, boxes suppressed at ``spec.iou``, at most ``spec.max_det`` rows per image,
    best score first.
    """
    prediction = torch.as_tensor(raw).float()
    batch = prediction.shape[0]
    image, boxes, conf, cls = candidates_of(prediction, spec)
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


MAX_DEVICE_CANDIDATES = 512
"""Most candidates of one image that ``nms_on_device`` suppresses on the device ([batch, n, n] overlaps); a batch with
more takes the host path (``nms``), with the same decisions."""


def candidates_by_image(raw: torch.Tensor, spec: ModelSpec):
    """The candidates above ``spec.conf``, grouped by image and best score first within it, as padded
    ``[batch, k]`` tensors: boxes (x1, y1, x2, y2 letterboxed), boxes shifted by class (as Ultralytics suppresses
    them), scores, classes, and which entries are real."""
    prediction = raw.float()
    batch = prediction.shape[0]
    image, boxes, conf, cls = candidates_of(prediction, spec)
    order = torch.sort(conf, descending=True, stable=True).indices
    order = order[torch.sort(image[order], stable=True).indices]  # by image, best score first within each
    image, boxes, conf, cls = image[order], boxes[order], conf[order], cls[order]
    counts = torch.bincount(image, minlength=batch)
    width = int(counts.max()) if len(image) else 0
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(image), device=raw.device) - starts[image]
    padded = prediction.new_zeros((batch, width, 10))
    padded[image, rank] = torch.cat((boxes, boxes + cls[:, None] * CLASS_OFFSET, conf[:, None], cls[:, None]), 1)
    valid = torch.zeros((batch, width), dtype=torch.bool, device=raw.device)
    valid[image, rank] = True
    return padded[..., :4], padded[..., 4:8], padded[..., 8], padded[..., 9], valid


def overlaps(boxes: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of boxes of each image, ``[batch, n, n]``, computed as torchvision's ``nms`` computes it."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    width = (torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :])).clamp_(min=0)
    height = (torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :])).clamp_(min=0)
    inter = width * height
    return inter / (area[:, :, None] + area[:, None, :] - inter)


def greedy_keep(suppresses: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Greedy NMS over boxes sorted best first: box i is kept unless a kept box before it overlaps it
    (``suppresses[b, j, i]``, j < i).

    That rule fixes box i once the boxes before it are fixed, so it has one solution, greedy NMS's, and
    iterating it from "all kept" reaches that solution after at most as many rounds as the longest chain
    of suppressions (Cluster-NMS, Zheng et al. 2021): a few rounds of batch-wide tensor work instead of
    a sequential loop.
    """
    n = valid.shape[1]
    earlier = torch.ones((n, n), dtype=torch.bool, device=valid.device).triu_(1)
    suppresses = suppresses & earlier
    keep = valid
    for _ in range(n + 1):
        # (keep_j & suppresses[j, i]) summed over j, as a batched product: no [batch, n, n] temporary per round
        suppressed = torch.bmm(keep[:, None, :].to(torch.float32), suppresses.to(torch.float32))[:, 0] > 0
        updated = valid & ~suppressed
        if torch.equal(updated, keep):
            return keep
        keep = updated
    return keep


def nms_on_device(raw: torch.Tensor, spec: ModelSpec, transforms: torch.Tensor) -> dict[str, np.ndarray] | None:
    """``pack_detections(nms(raw, spec), transforms, spec.max_det)``'s outputs, computed where ``raw`` is
    (``transforms``: ``[batch, 6]`` float32 ``LetterboxTransform`` fields, on that device); None when an image has
    more than ``MAX_DEVICE_CANDIDATES`` candidates (use the host path)."""
    boxes, shifted, scores, classes, valid = candidates_by_image(raw, spec)
    batch, width = valid.shape
    max_det = spec.max_det
    if width > MAX_DEVICE_CANDIDATES:
        return None
    keep = greedy_keep(overlaps(shifted) > spec.iou, valid) if width else valid
    rank = torch.cumsum(keep, 1) - 1
    keep &= rank < max_det
    gain_x, gain_y, pad_x, pad_y, img_w, img_h = (transforms[:, i, None] for i in range(6))
    x1, y1, x2, y2 = boxes.unbind(-1)
    x1, x2 = (((x - pad_x) / gain_x).clamp(min=0).minimum(img_w) for x in (x1, x2))
    y1, y2 = (((y - pad_y) / gain_y).clamp(min=0).minimum(img_h) for y in (y1, y2))
    rows = torch.stack((x1, y1, x2, y2, scores, classes), -1)
    packed = rows.new_zeros((batch, max_det + 1, 6))  # column max_det collects the dropped rows
    packed[torch.arange(batch, device=rows.device)[:, None], torch.where(keep, rank, max_det)] = rows
    host = packed[:, :max_det].cpu().numpy()
    num = keep.sum(1, keepdim=True).to(torch.int32).cpu().numpy()
    return {OUTPUT_NUM_DETECTIONS: num, OUTPUT_BOXES: np.ascontiguousarray(host[..., :4]),
            OUTPUT_SCORES: np.ascontiguousarray(host[..., 4]), OUTPUT_CLASSES: host[..., 5].astype(np.int32)}


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
