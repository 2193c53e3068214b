"""Accuracy of served detections against ground truth: COCO mAP, computed by pycocotools.

Detections of every image, whatever produced them (a served track, the Ultralytics
predictor), go through the same evaluator, so two mAP figures differ only by what the
detections differ by.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from python_models.client import Detections


@dataclass(frozen=True)
class GroundTruth:
    boxes: np.ndarray
    """(n, 4) x1, y1, x2, y2 in image pixels."""
    classes: np.ndarray
    """(n,) class indices."""
    width: int
    height: int


@dataclass(frozen=True)
class MeanAP:
    map50_95: float
    """COCO's primary metric: mAP averaged over IoU 0.50 to 0.95."""
    map50: float


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()


def coco_map(truth: Sequence[GroundTruth], detections: Sequence[Detections], num_classes: int) -> MeanAP:
    """mAP of ``detections[i]`` against ``truth[i]`` over all images, every class counted."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(truth) != len(detections):
        raise ValueError(f"{len(truth)} ground-truth images but {len(detections)} detection sets")
    images, annotations, results = [], [], []
    for image_id, (gt, det) in enumerate(zip(truth, detections), start=1):
        images.append({"id": image_id, "width": gt.width, "height": gt.height})
        for box, cls in zip(_xywh(gt.boxes), gt.classes):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls),
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        for box, score, cls in zip(_xywh(det.boxes), det.scores, det.classes):
            results.append({"image_id": image_id, "category_id": int(cls), "bbox": box, "score": float(score)})
    if not results:
        return MeanAP(0.0, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary table
        ground = COCO()
        ground.dataset = {"images": images, "annotations": annotations,
                          "categories": [{"id": k} for k in range(num_classes)]}
        ground.createIndex()
        evaluator = COCOeval(ground, ground.loadRes(results), "bbox")
        evaluator.params.maxDets = [1, 10, max(100, max(len(d) for d in detections))]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return MeanAP(float(evaluator.stats[0]), float(evaluator.stats[1]))


COCO_STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")
"""pycocotools' 12-number summary, in its order."""


def coco_results(lines: Sequence[dict], annotations: dict | None, names: Sequence[str]) -> list[dict]:
    """COCO results JSON from ``yolo11-triton detect`` output lines.

    With ``annotations`` (a COCO instances file, loaded), ``image_id`` comes from its images' file names and
    ``category_id`` from its categories, matched to the served class names (COCO's 80 names map onto its 91 ids);
    when the names do not all match, class index = category id. Without, images are numbered in output order.
    """
    from pathlib import Path

    if annotations is not None:
        by_name = {Path(img["file_name"]).name: img["id"] for img in annotations["images"]}
        categories = {c["name"]: c["id"] for c in annotations.get("categories", [])}
        category = ([categories[n] for n in names] if all(n in categories for n in names) else list(range(len(names))))
    else:
        by_name, category = {}, list(range(len(names)))
    results = []
    for index, line in enumerate(lines, start=1):
        image_id = by_name.get(Path(line["image"]).name) if annotations is not None else index
        if image_id is None:
            continue  # not an annotated image
        for det in line.get("detections", []):
            x1, y1, x2, y2 = det["box"]
            results.append({"image_id": image_id, "category_id": category[det["class_id"]],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": det["score"]})
    return results


def coco_evaluate(annotations_path: str, results: list[dict], image_ids: Sequence[int] | None = None
                  ) -> dict[str, float]:
    """The 12-number COCO summary of ``results`` against an annotation file (restricted to ``image_ids``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO(annotations_path)
        if not results:
            return dict.fromkeys(COCO_STATS, 0.0)
        evaluator = COCOeval(ground, ground.loadRes(results), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(COCO_STATS, (float(v) for v in evaluator.stats)))
