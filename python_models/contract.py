"""The one definition of what every public model takes and returns.

Model configs (``python_models.build.repository``), the Python models, the ONNX
exports and the tests all read these values; nothing else states them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 640
"""Square network input side; letterboxing pads every image to this."""

NUM_CLASSES = 80
"""Class count of the served weights (COCO). Export refuses weights that differ."""

STRIDES = (8, 16, 32)
NUM_ANCHORS = sum((IMAGE_SIZE // s) ** 2 for s in STRIDES)
"""Candidate boxes the YOLO11 head emits per image (8400 at 640)."""

PAD_VALUE = 114
"""Letterbox border colour, as in Ultralytics' ``LetterBox``."""

CONF_THRESHOLD = 0.25
IOU_THRESHOLD = 0.45
MAX_DETECTIONS = 100

MAX_IMAGE_PIXELS = 40_000_000
"""Images whose header claims more pixels are rejected before decoding."""

# Model names. The public ones are what clients call; the leaves appear in Triton's metrics.
PYTORCH = "yolo11_pytorch"
TRT_ENSEMBLE = "yolo11_trt"
END2END_ENSEMBLE = "yolo11_trt_end2end"
PREPROCESS = "yolo11_preprocess"
IMAGE_GUARD = "yolo11_image_guard"
RAW_TRT = "yolo11_raw_trt"
NMS = "yolo11_nms"
END2END_TRT = "yolo11_end2end_trt"

# Public I/O, identical for every track.
INPUT_IMAGES = "images"
OUTPUT_NUM_DETECTIONS = "num_detections"
OUTPUT_BOXES = "detection_boxes"
OUTPUT_SCORES = "detection_scores"
OUTPUT_CLASSES = "detection_classes"

# Tensors that pass between the steps of an ensemble.
CHECKED_IMAGES = "checked_images"
"""Track D: the encoded rows the CPU guard let through to the DALI leaf (bytes unchanged)."""
LETTERBOXED_IMAGES = "letterboxed_images"
LETTERBOX_TRANSFORM = "letterbox_transform"
RAW_PREDICTIONS = "raw_predictions"
ONNX_INPUT = "images"
ONNX_RAW_OUTPUT = "output0"

TRANSFORM_FIELDS = ("gain_x", "gain_y", "pad_x", "pad_y", "width", "height")
"""Layout of ``letterbox_transform``: original = (letterboxed - pad) / gain, clipped to width x height."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    dims: tuple[int, ...]
    """Per-row shape, without the batch dimension."""


PUBLIC_INPUTS = (TensorSpec(INPUT_IMAGES, np.dtype(np.uint8), (-1,)),)
PUBLIC_OUTPUTS = (
    TensorSpec(OUTPUT_NUM_DETECTIONS, np.dtype(np.int32), (1,)),
    TensorSpec(OUTPUT_BOXES, np.dtype(np.float32), (MAX_DETECTIONS, 4)),
    TensorSpec(OUTPUT_SCORES, np.dtype(np.float32), (MAX_DETECTIONS,)),
    TensorSpec(OUTPUT_CLASSES, np.dtype(np.int32), (MAX_DETECTIONS,)),
)
CHECKED_SPEC = TensorSpec(CHECKED_IMAGES, np.dtype(np.uint8), (-1,))
LETTERBOXED_SPEC = TensorSpec(LETTERBOXED_IMAGES, np.dtype(np.float32), (3, IMAGE_SIZE, IMAGE_SIZE))
TRANSFORM_SPEC = TensorSpec(LETTERBOX_TRANSFORM, np.dtype(np.float32), (len(TRANSFORM_FIELDS),))
RAW_SPEC = TensorSpec(RAW_PREDICTIONS, np.dtype(np.float32), (4 + NUM_CLASSES, NUM_ANCHORS))


@dataclass(frozen=True)
class Tier:
    """Batching settings of one Track D tier (its DALI and TensorRT leaves share them)."""

    name: str
    max_batch_size: int
    max_queue_delay_us: int
    instances: int


DALI_TIERS = (
    Tier("streaming", max_batch_size=8, max_queue_delay_us=100, instances=3),
    Tier("balanced", max_batch_size=64, max_queue_delay_us=500, instances=2),
    Tier("batch", max_batch_size=128, max_queue_delay_us=5000, instances=1),
)


def dali_preprocess_name(tier: Tier) -> str:
    return f"yolo11_dali_preprocess_{tier.name}"


def dali_end2end_name(tier: Tier) -> str:
    return f"{END2END_TRT}_{tier.name}"


def dali_ensemble_name(tier: Tier) -> str:
    return f"yolo11_dali_{tier.name}"


PUBLIC_MODELS = (PYTORCH, TRT_ENSEMBLE, END2END_ENSEMBLE, *(dali_ensemble_name(t) for t in DALI_TIERS))
"""Every track, in the order the docs and reports list them."""
