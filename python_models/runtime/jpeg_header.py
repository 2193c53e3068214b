"""A JPEG's size, colour mode and EXIF orientation read by walking its markers: the header read every row of Track A
and of Track D's guard costs, in a few microseconds where Pillow's parser takes fifteen (it builds every
quantisation table and an EXIF object per image).

It answers only for the layout cameras and encoders write: segments back to back up to the first scan, an 8-bit
frame of 1, 3 or 4 components, at most one EXIF block whose first directory and every value it points at lie
inside it. For anything else (and for anything Pillow would refuse) it gives None, and ``decode.probe`` asks
Pillow. So an answer is Pillow's answer or none; tests/test_jpeg_header.py fuzzes the two against each other.
"""

from __future__ import annotations

import struct

FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
APPLICATION_MARKERS = frozenset({0xE0, 0xE1, 0xE2, 0xED, 0xEE})
"""Application segments Pillow looks into (JFIF, EXIF and XMP, ICC, Photoshop, Adobe)."""
SKIPPED_MARKERS = frozenset({0xC4, 0xCC, 0xDC, 0xDD, 0xDF, 0xFE, *(set(range(0xE0, 0xF0)) - APPLICATION_MARKERS)})
"""Segments read past (Huffman and arithmetic tables, restart interval, comments, other application data): Pillow
stores them unchecked."""
START_OF_SCAN = 0xDA
QUANTISATION = 0xDB
MODES = {1: "L", 3: "RGB", 4: "CMYK"}
EXIF_PREFIX = b"Exif\x00\x00"
XMP_PREFIX = b"http://ns.adobe.com/xap/1.0/\x00"
TIFF_ORDER = {b"II*\x00": "<", b"MM\x00*": ">"}
TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}
ORIENTATION_TAG = 0x0112
SHORT = 3

Header = tuple[int, int, str, int]
"""width, height, Pillow's mode, EXIF orientation (1 when there is none)."""


def jpeg_header(buf: bytes | memoryview) -> Header | None:
    """The header of a JPEG (``buf`` starts with its start-of-image marker), or None where Pillow must decide."""
    end = len(buf)
    at = 2
    frame: tuple[int, int, str] | None = None
    exif: bytes | None = None
    xmp = False
    while at + 4 <= end:
        if buf[at] != 0xFF:
            return None
        while buf[at + 1] == 0xFF:  # fill bytes before a marker
            at += 1
            if at + 4 > end:
                return None
        marker = buf[at + 1]
        (length,) = struct.unpack_from(">H", buf, at + 2)
        body_end = at + 2 + length
        if length < 2 or body_end > end:
            return None
        if marker == START_OF_SCAN:
            if frame is None:
                return None
            orientation = exif_orientation(exif, xmp)
            return None if orientation is None else (*frame, orientation)
        if marker in FRAME_MARKERS:
            frame = frame_header(bytes(buf[at + 4 : body_end]))
            if frame is None:
                return None
        elif marker == QUANTISATION:
            if not quantisation_ok(bytes(buf[at + 4 : body_end])):
                return None
        elif marker in APPLICATION_MARKERS:
            body = bytes(buf[at + 4 : body_end])
            if not _application_ok(marker, body):
                return None
            if marker == 0xE1 and body.startswith(EXIF_PREFIX):
                if exif is not None:
                    return None  # Pillow joins a second EXIF block to the first
                exif = body[len(EXIF_PREFIX):]
            elif marker == 0xE1 and body.startswith(XMP_PREFIX):
                xmp = True
        elif marker not in SKIPPED_MARKERS:
            return None
        at = body_end
    return None


def frame_header(body: bytes) -> tuple[int, int, str] | None:
    if len(body) < 6 or (len(body) - 6) % 3 or body[0] != 8 or body[5] not in MODES:
        return None
    height, width = struct.unpack_from(">HH", body, 1)
    return (width, height, MODES[body[5]]) if width and height else None


def quantisation_ok(body: bytes) -> bool:
    at = 0
    while at < len(body):
        at += 1 + 64 * (1 if body[at] < 16 else 2)
        if at > len(body):
            return False
    return True


def _application_ok(marker: int, body: bytes) -> bool:
    """False for the application segments Pillow's parser looks into and would fail on (too short), and for
    Photoshop's resource blocks, whose parsing is left to Pillow."""
    if marker == 0xE0 and body.startswith(b"JFIF"):
        return len(body) >= 7
    if marker == 0xEE and body.startswith(b"Adobe"):
        return len(body) >= 7
    if marker == 0xE2 and body.startswith(b"ICC_PROFILE\x00"):
        return len(body) >= 14
    return not (marker == 0xED and body.startswith(b"Photoshop 3.0\x00"))


def _directory(tiff: bytes) -> tuple[str, list[tuple[int, int, int, int]]] | None:
    """The byte order and first directory's entries (tag, type, count, entry offset) of a TIFF block, None unless
    the directory and every value it points at lie inside the block."""
    order = TIFF_ORDER.get(tiff[:4])
    if order is None or len(tiff) < 8:
        return None
    (first,) = struct.unpack_from(order + "L", tiff, 4)
    if first + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, first)
    if first + 2 + 12 * count + 4 > len(tiff):
        return None
    entries = []
    for k in range(count):
        at = first + 2 + 12 * k
        tag, kind, n = struct.unpack_from(order + "HHL", tiff, at)
        size = n * TIFF_TYPE_SIZES.get(kind, 0)
        if size > 4 and struct.unpack_from(order + "L", tiff, at + 8)[0] + size > len(tiff):
            return None
        entries.append((tag, kind, n, at))
    return order, entries


def exif_orientation(tiff: bytes | None, xmp: bool = False) -> int | None:
    """The orientation in an EXIF block's first directory (1 when there is none), None where Pillow must decide:
    a block it reads differently, an orientation of 0, or none in the block beside an XMP packet (where Pillow
    then looks for one)."""
    directory = None if tiff is None else _directory(tiff)
    if directory is None:
        return None if tiff is not None or xmp else 1
    order, entries = directory
    found = [(kind, n, at) for tag, kind, n, at in entries if tag == ORIENTATION_TAG]
    if not found:
        return None if xmp else 1
    if len(found) > 1 or found[0][:2] != (SHORT, 1):
        return None
    (value,) = struct.unpack_from(order + "H", tiff, found[0][2] + 8)
    return value or None
