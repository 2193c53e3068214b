"""Pixels to the network's input, and boxes back: every step between the decoded image and the network, and the one
after it.

``letterbox``: ``ultralytics.data.augment.LetterBox(640)`` followed by the predictor's BGR->RGB, CHW and x(1/255)
steps; ``letterbox_rgb`` stops before the cast (uint8 RGB HWC, what the engines take) and ``network_input`` finishes
it; ``letterbox_padded`` is the BGR image Track A hands its network; ``unletterbox_boxes``:
``ultralytics.utils.ops.scale_boxes`` + ``clip_boxes``. Pinned by tests, to Ultralytics and to exact values.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import cv2
import numpy as np

from python_models.contract import PAD_VALUE


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


def letterbox_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """Resized (height, width) and (top, left) padding for an image, by Ultralytics' rounding rules."""
    ratio = min(size / height, size / width)
    new_w, new_h = max(round(width * ratio), 1), max(round(height * ratio), 1)
    top = round((size - new_h) / 2 - 0.1)
    left = round((size - new_w) / 2 - 0.1)
    return new_h, new_w, top, left


def letterbox_transform(height: int, width: int, size: int) -> LetterboxTransform:
    """Where ``letterbox_padded`` places an image of that size: what every path hands the un-letterbox."""
    new_h, new_w, top, left = letterbox_geometry(height, width, size)
    return LetterboxTransform(new_w / width, new_h / height, float(left), float(top), float(width), float(height))


def letterbox_padded(image_bgr: np.ndarray, size: int) -> tuple[np.ndarray, LetterboxTransform]:
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
    return padded, letterbox_transform(height, width, size)


def letterbox_rgb(image_bgr: np.ndarray, size: int, out: np.ndarray | None = None
                  ) -> tuple[np.ndarray, LetterboxTransform]:
    """What tracks B, C and D hand their engines: the letterboxed image as uint8 RGB HWC (``size`` x ``size`` x 3).

    The engines' graphs finish it as ``network_input`` does. ``out`` (size x size x 3 uint8) lets a
    caller fill a row of a batch without another copy.
    """
    padded, transform = letterbox_padded(image_bgr, size)
    return cv2.cvtColor(padded, cv2.COLOR_BGR2RGB, dst=out), transform


def network_input(letterboxed_rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB HWC (one image or a batch) to the network's float32 CHW input in [0, 1]: a cast, then x float32(1/255).

    The exported graphs' entry (``end2end.uint8_input_graph``) takes the same float32 steps, so the
    engines see bit-for-bit what Ultralytics' predictor computes from the same pixels.
    """
    chw = np.moveaxis(letterboxed_rgb, -1, -3)
    if out is None:
        out = np.empty(chw.shape, dtype=np.float32)
    out[...] = chw
    out *= np.float32(1 / 255)
    return out


def letterbox(image_bgr: np.ndarray, size: int, out: np.ndarray | None = None) -> tuple[np.ndarray, LetterboxTransform]:
    """Resize keeping aspect ratio, pad with grey to ``size`` x ``size``, return RGB CHW float32 in [0, 1]: the
    network's input, as Ultralytics' ``LetterBox`` and predictor make it (``letterbox_rgb``, then ``network_input``).

    ``out`` (3 x size x size float32) lets a caller fill a row of a batch without another copy.
    """
    rgb, transform = letterbox_rgb(image_bgr, size)
    return network_input(rgb, out), transform


def unletterbox_boxes(boxes_xyxy: np.ndarray, transform: LetterboxTransform) -> np.ndarray:
    """Map xyxy boxes from letterboxed pixels to original-image pixels, clipped to the image."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).copy()
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - transform.pad_x) / transform.gain_x
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - transform.pad_y) / transform.gain_y
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, transform.width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, transform.height)
    return boxes
