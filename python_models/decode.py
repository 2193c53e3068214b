"""Turn one row of the public ``images`` tensor into a BGR pixel array, or say clearly why not."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import JpegImagePlugin, PngImagePlugin

from python_models.contract import MAX_IMAGE_PIXELS

JPEG_SOI = b"\xff\xd8\xff"
JPEG_SOS = b"\xff\xda"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND"
PNG_CRITICAL_CHUNKS = (b"IHDR", b"PLTE", b"IDAT", b"IEND")


class InvalidImageError(ValueError):
    """The bytes are not a complete JPEG or PNG this service accepts; the message says why."""


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int


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
    while end > 0:
        start = max(0, end - PAYLOAD_SCAN_BLOCK)
        block = array[start:end]
        if block.any():
            return array[: start + int(np.flatnonzero(block)[-1]) + 1]
        end = start
    return array[:0]


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
        if buf.rfind(JPEG_EOI) < buf.rfind(JPEG_SOS):
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
    except Exception as exc:  # Pillow raises many types for corrupt headers
        raise InvalidImageError(f"corrupt {fmt} header: {exc}") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidImageError(
            f"{fmt} header claims {width}x{height} = {width * height} pixels, over the limit of {MAX_IMAGE_PIXELS}"
        )
    return ImageHeader(fmt, width, height)


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
