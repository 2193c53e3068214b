"""The inputs every public model must refuse, and the unusual ones it must accept: one list for the tests and
for ``tools/check_server.py``."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BadInput:
    data: bytes
    message: str
    """What the INVALID_ARGUMENT message must contain."""


def huge_png(side: int = 30000) -> bytes:
    """A valid PNG header claiming ``side`` x ``side`` pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b"")


def huge_jpeg(jpeg: bytes, side: int = 30000) -> bytes:
    """``jpeg`` with its baseline frame header rewritten to claim ``side`` x ``side`` pixels."""
    data = bytearray(jpeg)
    sof = data.find(b"\xff\xc0")
    if sof < 0:
        raise ValueError("not a baseline JPEG")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)  # SOF0: precision, then height and width
    return bytes(data)


def corrupt_pixels(png: bytes) -> bytes:
    """``png`` with 2000 bytes of its pixel data zeroed and every header intact."""
    data = bytearray(png)
    start = data.find(b"IDAT") + 10
    data[start : start + 2000] = bytes(2000)
    return bytes(data)


GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def bad_inputs(jpeg: bytes, png: bytes) -> dict[str, BadInput]:
    """Every kind of bad row, built from one real JPEG and one real PNG (at least 20 kB)."""
    rng = np.random.default_rng(0)
    return {
        "empty": BadInput(b"", "empty image"),
        "zeros": BadInput(bytes(64), "empty image"),
        "random": BadInput(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a JPEG or PNG"),
        "gif": BadInput(GIF, "not a JPEG or PNG"),
        "truncated_jpeg": BadInput(jpeg[: len(jpeg) // 2], "truncated JPEG"),
        "truncated_png": BadInput(png[:20000], "truncated PNG"),
        "jpeg_header_only": BadInput(jpeg[:600], "truncated JPEG"),
        # Headers intact, pixel data destroyed: the PNG chunk CRC tells, without decoding.
        "corrupt_png_pixels": BadInput(corrupt_pixels(png), "corrupt PNG"),
        # Headers that claim 30000 x 30000 pixels: refused from the header, before any decoding.
        "huge_png_header": BadInput(huge_png(), "over the limit of 40000000"),
        "huge_jpeg_header": BadInput(huge_jpeg(jpeg), "over the limit of 40000000"),
    }
