"""Letterbox to the network's square input and map boxes back, exactly as Ultralytics does.

``letterbox`` reproduces ``ultralytics.data.augment.LetterBox(640)`` followed by the
predictor's BGR->RGB, CHW and /255 steps; ``unletterbox_boxes`` reproduces
``ultralytics.utils.ops.scale_boxes`` + ``clip_boxes``. Both are pinned by tests.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import cv2
import numpy as np

from python_models.contract import IMAGE_SIZE, PAD_VALUE


@dataclass(frozen=True)
class LetterboxTransform:
    """How an original image was placed in the letterboxed one (field order = ``TRANSFORM_FIELDS``)."""

    gain_x: float
    gain_y: float
    pad_x: float
    pad_y: float
    width: float
    height: float

    def to_array(self) -> np.ndarray:
        return np.asarray(astuple(self), dtype=np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray) -> "LetterboxTransform":
        return cls(*(float(v) for v in values))


def letterbox_geometry(height: int, width: int, size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    """Resized (height, width) and (top, left) padding for an image, by Ultralytics' rounding rules."""
    ratio = min(size / height, size / width)
    new_w, new_h = max(round(width * ratio), 1), max(round(height * ratio), 1)
    top = round((size - new_h) / 2 - 0.1)
    left = round((size - new_w) / 2 - 0.1)
    return new_h, new_w, top, left


def letterbox_padded(image_bgr: np.ndarray, size: int = IMAGE_SIZE) -> tuple[np.ndarray, LetterboxTransform]:
    """Resize keeping aspect ratio and pad with grey to ``size`` x ``size``: BGR HWC uint8, a quarter of the float bytes.

    Track A on the GPU ships this and normalises there; ``letterbox`` finishes it on the CPU.
    """
    height, width = image_bgr.shape[:2]
    new_h, new_w, top, left = letterbox_geometry(height, width, size)
    resized = image_bgr if (new_h, new_w) == (height, width) else cv2.resize(
        image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR
    )
    padded = cv2.copyMakeBorder(
        resized, top, size - new_h - top, left, size - new_w - left, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    transform = LetterboxTransform(new_w / width, new_h / height, float(left), float(top), float(width), float(height))
    return padded, transform


def letterbox(image_bgr: np.ndarray, size: int = IMAGE_SIZE, out: np.ndarray | None = None) -> tuple[np.ndarray, LetterboxTransform]:
    """Resize keeping aspect ratio, pad with grey to ``size`` x ``size``, return RGB CHW float32 in [0, 1].

    ``out`` (3 x size x size float32) lets a caller fill a row of a batch without another copy.
    """
    padded, transform = letterbox_padded(image_bgr, size)
    if out is None:
        out = np.empty((3, size, size), dtype=np.float32)
    # Pad in uint8 (cheap), cast plane by plane into the contiguous output, scale once in place:
    # measured faster than cv2.dnn.blobFromImage or a fused multiply-with-cast into a strided view.
    for channel, plane in enumerate(reversed(cv2.split(padded))):  # BGR -> RGB
        out[channel] = plane
    out *= np.float32(1 / 255)
    return out, transform


def unletterbox_boxes(boxes_xyxy: np.ndarray, transform: LetterboxTransform) -> np.ndarray:
    """Map xyxy boxes from letterboxed pixels to original-image pixels, clipped to the image."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).copy()
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - transform.pad_x) / transform.gain_x
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - transform.pad_y) / transform.gain_y
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, transform.width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, transform.height)
    return boxes
