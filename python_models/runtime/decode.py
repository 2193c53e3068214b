"""Encoded image bytes to pixels, or the reason not: the one check every track applies to a row.

``probe`` reads format, size, colour mode and EXIF orientation from the header alone and refuses what decoding
would get wrong (empty, not JPEG/PNG, truncated, a JPEG scan its headers cannot decode, damaged PNG data, over the
pixel limit) with ``InvalidImageError``;
``decode`` gives BGR pixels as ``cv2.imread`` does. ``payload`` strips the zeros that pad a row to the longest of
its request; ``padded_groups`` and ``stack_padded`` make and undo that padding for rows of several requests.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import JpegImagePlugin, PngImagePlugin

from python_models.contract import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from python_models.runtime.jpeg_header import first_scan_problem, jpeg_header


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
    array = np.ascontiguousarray(payload(data))
    if not array.size:
        raise InvalidImageError("empty image: the row holds no bytes (or only zero padding)")
    if array.size > MAX_IMAGE_BYTES:
        raise InvalidImageError(f"the row holds {array.size} bytes, over the limit of {MAX_IMAGE_BYTES} (no image "
                                f"within the limit of {MAX_IMAGE_PIXELS} pixels is longer)")
    start = array[:8].tobytes()
    if start.startswith(JPEG_SOI):
        if jpeg_truncated(array):
            raise InvalidImageError("truncated JPEG: no end-of-image marker after the last scan")
        view = memoryview(array)
        if problem := first_scan_problem(view):
            raise InvalidImageError(problem)
        header = jpeg_header(view)
        if header is not None:
            return checked_size(ImageHeader("JPEG", *header))
        return checked_size(pillow_header(array.tobytes(), "JPEG"))
    if start.startswith(PNG_SIGNATURE):
        buf = array.tobytes()
        if buf.rfind(PNG_IEND) < 0:
            raise InvalidImageError("truncated PNG: no IEND chunk")
        png_damage(buf)
        return checked_size(pillow_header(buf, "PNG"))
    raise InvalidImageError(f"not a JPEG or PNG: the row starts with bytes {start.hex()} ({array.size} bytes in all)")


JPEG_TAIL = 4096


def jpeg_truncated(array: np.ndarray) -> bool:
    """True when no end-of-image marker follows the last scan header.

    Entropy-coded data byte-stuffs 0xFF, so an EOI after the last scan header only exists when the last scan is
    complete; an EXIF thumbnail's EOI comes earlier. The last EOI is searched in a tail of the row that grows until
    it holds one (a whole photo is not copied to find the marker in its last bytes), and no scan header may follow.
    """
    size = JPEG_TAIL
    while True:
        first = max(0, len(array) - size)
        tail = array[first:].tobytes()
        eoi = tail.rfind(JPEG_EOI)
        if eoi >= 0 or first == 0:
            return tail.find(JPEG_SOS, eoi + 1) >= 0
        size *= 16


def pillow_header(buf: bytes, fmt: str) -> ImageHeader:
    """The header as Pillow reads it: for PNGs, and for the JPEGs ``jpeg_header`` leaves to it."""
    # The format's own header parser, not Image.open: ultralytics patches Image.open to
    # pip-install a HEIF plugin when Pillow cannot identify a file, which a bad request
    # must never trigger; and Image.open's decompression-bomb check is ours (``checked_size``).
    reader = JpegImagePlugin.JpegImageFile if fmt == "JPEG" else PngImagePlugin.PngImageFile
    try:
        with reader(io.BytesIO(buf)) as img:
            width, height = img.size
            mode = img.mode
            orientation = int(img.getexif().get(0x0112, 1)) if fmt == "JPEG" else 1
    except Exception as exc:  # Pillow raises many types for corrupt headers
        raise InvalidImageError(f"corrupt {fmt} header: {exc}") from None
    return ImageHeader(fmt, width, height, mode, orientation)


def checked_size(header: ImageHeader) -> ImageHeader:
    pixels = header.width * header.height
    if pixels > MAX_IMAGE_PIXELS:
        raise InvalidImageError(f"{header.format} header claims {header.width}x{header.height} = {pixels} pixels, "
                                f"over the limit of {MAX_IMAGE_PIXELS}")
    return header


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
