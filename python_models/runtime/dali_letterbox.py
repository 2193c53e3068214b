"""Track D's preprocessing as one DALI graph: decode, letterbox to the served size with grey 114 (uint8 RGB HWC, as
``letterbox.letterbox_rgb``; the engine's graph casts and scales on entry), plus the transform.

The same graph runs in two places, differing only in where JPEGs are decoded:
- on the GPU host, the Triton DALI backend serialises it (``dali.py`` in each tier's
  version folder, ``@autoserialize``) with ``decoder_device="mixed"`` (nvJPEG);
- in the CPU profile, the DALI twin builds it with ``decoder_device="cpu"`` and no GPU.

The geometry is Ultralytics' ``LetterBox`` (``python_models.runtime.letterbox``), computed in
float64 on DALI's CPU side so the transform equals the CPU letterbox's: Python's
round-half-to-even is reproduced, since DALI only has floor.

Images are turned upright by their EXIF orientation tag, as OpenCV (and so every other track and the
Ultralytics predictor) does: phones store portrait photos sideways with a tag. DALI's ``fn.decoders.image``
and ``fn.peek_image_shape`` ignore the tag (their documentation says so); the nvImageCodec-based
``fn.experimental`` decoder and peek apply it (``adjust_orientation``, on the CPU and the ``mixed`` backend
alike) and decode upright JPEGs to the same pixels as the legacy CPU decoder.
"""

from __future__ import annotations

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

from python_models.contract import INPUT_IMAGES, PAD_VALUE

DECODER_DEVICES = ("mixed", "cpu")


def _round_half_even(x):
    """Python's ``round`` on a non-negative DALI float64 node."""
    nearest = dmath.floor(x + 0.5)
    tie = (nearest - x) == 0.5
    odd = nearest - 2 * dmath.floor(nearest / 2)
    return nearest - tie * odd


def letterbox_graph(size: int, decoder_device: str = "mixed", upright: bool = True):
    """Outputs, in the order of the model config: letterboxed images [size, size, 3] uint8 RGB, transform [6] float32.

    ``upright=False`` builds the same graph on DALI's legacy decoder and peek, which ignore the EXIF tag: never
    served, kept so that ``yolo11-triton check dali`` can measure what turning photos upright costs."""
    if decoder_device not in DECODER_DEVICES:
        raise ValueError(f"decoder_device must be one of {DECODER_DEVICES}, not {decoder_device!r}")
    encoded = fn.external_source(name=INPUT_IMAGES, dtype=types.UINT8, ndim=1)
    # H, W, C of the upright image, as decoded below.
    if upright:
        shape = fn.experimental.peek_image_shape(encoded, dtype=types.FLOAT64, adjust_orientation=True)
    else:
        shape = fn.peek_image_shape(encoded, dtype=types.FLOAT64)
    height, width = shape[0], shape[1]
    ratio = dmath.min(size / height, size / width)
    new_w = dmath.max(_round_half_even(width * ratio), 1.0)
    new_h = dmath.max(_round_half_even(height * ratio), 1.0)
    left = dmath.floor((size - new_w) / 2 - 0.1 + 0.5)  # never a tie: x.4 or x.9
    top = dmath.floor((size - new_h) / 2 - 0.1 + 0.5)

    if upright:
        images = fn.experimental.decoders.image(encoded, device=decoder_device, output_type=types.RGB,
                                                adjust_orientation=True)
    else:
        images = fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB)
    # Linear without antialiasing is what cv2.INTER_LINEAR, and so Ultralytics, does.
    resized = fn.resize(images, resize_x=fn.cast(new_w, dtype=types.FLOAT), resize_y=fn.cast(new_h, dtype=types.FLOAT),
                        interp_type=types.INTERP_LINEAR, antialias=False, dtype=types.UINT8)
    padded = fn.slice(resized, start=fn.cast(fn.stack(-top, -left), dtype=types.INT32),
                      shape=[size, size], axis_names="HW",
                      out_of_bounds_policy="pad", fill_values=PAD_VALUE)
    transform = fn.cast(fn.stack(new_w / width, new_h / height, left, top, width, height), dtype=types.FLOAT)
    return padded, transform


letterbox_pipeline = pipeline_def(letterbox_graph)
"""``letterbox_pipeline(size=..., batch_size=..., num_threads=..., device_id=..., decoder_device=...)`` builds a
Pipeline."""
