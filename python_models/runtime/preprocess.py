"""Encoded image bytes to the network's input, and back: every step before the network and the one after it.

- ``probe`` and ``decode``: one row of the public ``images`` tensor to BGR pixels, or a clear
  ``InvalidImageError`` (empty, not JPEG/PNG, truncated, damaged PNG data, over the pixel
  limit); ``payload`` strips the zeros that pad a row to the longest of its request.
- ``letterbox``: ``ultralytics.data.augment.LetterBox(640)`` followed by the predictor's
  BGR->RGB, CHW and x(1/255) steps; ``letterbox_rgb`` stops before the cast (uint8 RGB HWC, what
  the engines take) and ``network_input`` finishes it; ``unletterbox_boxes``: ``ultralytics.utils.ops.scale_boxes``
  + ``clip_boxes``. Both are pinned by tests, to Ultralytics and to exact values.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import astuple, dataclass
from typing import TypeVar

import cv2
import numpy as np
from PIL import JpegImagePlugin, PngImagePlugin

from python_models.contract import MAX_IMAGE_PIXELS, PAD_VALUE

JPEG_SOI = b"\xff\xd8\xff"
JPEG_SOS = b"\xff\xda"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND"
PNG_CRITICAL_CHUNKS = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
T = TypeVar("T")
U = TypeVar("U")


class InvalidImageError(ValueError):
    """The bytes are not a complete JPEG or PNG this service accepts; the message says why."""


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int
    mode: str = "RGB"
    """Pillow's mode for the stored pixels (``L``, ``RGB``, ``CMYK``...)."""
    orientation: int = 1
    """EXIF orientation (1: stored upright); decoding applies it."""


PAYLOAD_SCAN_BLOCK = 1 << 16


def payload(data: bytes | np.ndarray) -> np.ndarray:
    """The row without the zeros that pad it to the longest row of its request: a view, no copy.

    A valid JPEG ends with its end-of-image marker and a PNG with its IEND chunk's CRC, neither
    zero, so trailing zeros are padding. Scanning back from the end in blocks costs one vectorised
    pass over the padding, and copies nothing: a small image padded next to a 4 MB one no longer
    pays for the 4 MB in every later step.
    """
    array = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    array = array.reshape(-1)
    end = len(array)
    if end and array[end - 1]:  # not padded: the longest row of its request, or a request of one image
        return array
    while end > 0:
        start = max(0, end - PAYLOAD_SCAN_BLOCK)
        block = array[start:end]
        if block.any():
            return array[: start + int(np.flatnonzero(block)[-1]) + 1]
        end = start
    return array[:0]


MAX_PADDING = 2
"""``padded_groups`` keeps the padded bytes of a group within this many times the bytes it pads."""


def padded_groups(shapes: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Indices of requests (each ``(rows, row length)``) grouped so that padding each group's rows to its longest
    costs at most ``MAX_PADDING`` times their own bytes: one 4 MB photo among small ones gets a group of its own
    instead of padding them all to 4 MB. Longest first; every index once."""
    order = sorted(range(len(shapes)), key=lambda i: -shapes[i][1])
    groups: list[list[int]] = []
    padded = own = 0
    for index in order:
        rows, length = shapes[index]
        if groups:
            longest = shapes[groups[-1][0]][1]
            if (padded + rows * longest) <= MAX_PADDING * (own + rows * length):
                groups[-1].append(index)
                padded, own = padded + rows * longest, own + rows * length
                continue
        groups.append([index])
        padded = own = rows * length
    return groups


def stack_padded(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The rows of several requests (each ``rows x length``, uint8) as one array, zero-padded to the longest: how the
    rows of one client request already arrive (``payload`` strips the zeros again)."""
    longest = max(a.shape[1] for a in arrays)
    if all(a.shape[1] == longest for a in arrays):
        return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    out = np.zeros((sum(len(a) for a in arrays), longest), np.uint8)
    start = 0
    for array in arrays:
        out[start : start + len(array), : array.shape[1]] = array
        start += len(array)
    return out


def probe(data: bytes | np.ndarray) -> ImageHeader:
    """Read format and size from the header alone, and reject what decoding would get wrong.

    Rows of a multi-image request are zero-padded to the longest row, so trailing
    bytes after the end-of-image marker are allowed.
    """
    buf = payload(data).tobytes()
    if not buf:
        raise InvalidImageError("empty image: the row holds no bytes (or only zero padding)")
    if buf.startswith(JPEG_SOI):
        fmt = "JPEG"
        # Entropy-coded data byte-stuffs 0xFF, so an EOI after the last scan header
        # only exists when the last scan is complete; an EXIF thumbnail's EOI comes earlier.
        # "No scan header after the last EOI" is searched forward from that EOI (near the end), not by
        # finding the last scan header backwards through the whole entropy-coded data.
        if buf.find(JPEG_SOS, buf.rfind(JPEG_EOI) + 1) >= 0:
            raise InvalidImageError("truncated JPEG: no end-of-image marker after the last scan")
    elif buf.startswith(PNG_SIGNATURE):
        fmt = "PNG"
        if buf.rfind(PNG_IEND) < 0:
            raise InvalidImageError("truncated PNG: no IEND chunk")
        png_damage(buf)
    else:
        raise InvalidImageError(
            f"not a JPEG or PNG: the row starts with bytes {buf[:8].hex()} ({len(buf)} bytes in all)"
        )
    # The format's own header parser, not Image.open: ultralytics patches Image.open to
    # pip-install a HEIF plugin when Pillow cannot identify a file, which a bad request
    # must never trigger; and Image.open's decompression-bomb check is ours below.
    reader = JpegImagePlugin.JpegImageFile if fmt == "JPEG" else PngImagePlugin.PngImageFile
    try:
        with reader(io.BytesIO(buf)) as img:
            width, height = img.size
            mode = img.mode
            orientation = int(img.getexif().get(0x0112, 1)) if fmt == "JPEG" else 1
    except Exception as exc:  # Pillow raises many types for corrupt headers
        raise InvalidImageError(f"corrupt {fmt} header: {exc}") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidImageError(
            f"{fmt} header claims {width}x{height} = {width * height} pixels, over the limit of {MAX_IMAGE_PIXELS}"
        )
    return ImageHeader(fmt, width, height, mode, orientation)


def png_damage(buf: bytes) -> None:
    """Raise when a critical chunk of a PNG fails its CRC or runs past the data.

    Every chunk carries a CRC-32, so damaged pixel data is found without decoding it
    (zlib's CRC runs at gigabytes per second). Track D needs this: its GPU decoder fails
    the whole batch on one undecodable image, so damage must be refused before it.
    Ancillary chunks are skipped, as decoders ignore their CRC errors.
    """
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(buf):
        length, kind = struct.unpack_from(">I4s", buf, offset)
        end = offset + 12 + length
        if end > len(buf):
            raise InvalidImageError(f"truncated PNG: chunk {kind!r} at byte {offset} runs past the data")
        if kind in PNG_CRITICAL_CHUNKS:
            (crc,) = struct.unpack_from(">I", buf, end - 4)
            if zlib.crc32(buf[offset + 4 : end - 4]) != crc:
                raise InvalidImageError(f"corrupt PNG: chunk {kind.decode()} at byte {offset} fails its CRC check "
                                        "(damaged data)")
        if kind == PNG_IEND:
            return
        offset = end


def decode(data: bytes | np.ndarray) -> np.ndarray:
    """Decode one encoded JPEG/PNG into an HxWx3 uint8 BGR array, as ``cv2.imread`` would.

    Grayscale, alpha and 16-bit images become 8-bit BGR; EXIF orientation is applied.
    """
    array = payload(data)
    header = probe(array)
    image = cv2.imdecode(array, cv2.IMREAD_COLOR)
    if image is None:
        raise InvalidImageError(f"corrupt {header.format}: the decoder could not read the pixel data")
    return image


MAX_DECODE_THREADS = 16


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's cpuset), not the host's count,
    so that decode threads are shared out over the cores actually given to the server."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def decode_threads(asked: int, cores: int, instance_groups: list[dict], gpu_count: int) -> int:
    """Decode threads for each Track A instance: ``asked`` (the ``decode_threads`` parameter) when above 0.

    0 shares twice the host's cores out over the instances on the host (``instance_groups``
    as in the config Triton hands the backend; a KIND_GPU group's count is per GPU), at
    most 16 and at least 1. Every instance decodes on the same cores: on an H100 host (16
    cores, 4 instances) 16 threads each gave 1,113 images/s at concurrency 128, 4 each
    1,387 and 8 each 1,529 (results/h100_fp16_4inst_threads8).
    """
    if asked < 0:
        raise ValueError(f"parameter decode_threads must be 0 (automatic) or more, not {asked}")
    if asked:
        return asked
    instances = 0
    for group in instance_groups or [{"count": 1}]:
        devices = len(group.get("gpus", [])) or (max(gpu_count, 1) if group.get("kind") == "KIND_GPU" else 1)
        instances += int(group.get("count", 1)) * devices
    return max(1, min(MAX_DECODE_THREADS, 2 * cores // max(instances, 1)))


def map_rows(work: Callable[[U], T], rows: Sequence[U], pool: Executor | None = None) -> list[T]:
    """``work`` over ``rows``, in order: on ``pool``'s threads when given and there is more than one row."""
    return list(pool.map(work, rows)) if pool is not None and len(rows) > 1 else [work(row) for row in rows]


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
