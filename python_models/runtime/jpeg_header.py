"""A JPEG's size, colour mode and EXIF orientation read by walking its markers: the header read every row of Track A
and of Track D's guard costs, in a few microseconds where Pillow's parser takes fifteen (it builds every
quantisation table and an EXIF object per image).

It answers only for the layout cameras and encoders write: segments back to back up to the first scan, an 8-bit
frame of 1, 3 or 4 components, at most one EXIF block whose first directory and every value it points at lie
inside it. For anything else (and for anything Pillow would refuse) it gives None, and ``decode.probe`` asks
Pillow. So an answer is Pillow's answer or none; tests/test_jpeg_header.py fuzzes the two against each other.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator

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


def segments(buf: bytes | memoryview) -> Iterator[tuple[int, int, int] | None]:
    """(marker, body start, body end) of each marker segment after the start-of-image marker, the first scan header
    included, then None: a layout this walk does not follow (a byte where a marker should be, a length that runs
    past the data), or the data's end, ends it with None."""
    end = len(buf)
    at = 2
    while at + 4 <= end:
        if buf[at] != 0xFF:
            break
        while buf[at + 1] == 0xFF:  # fill bytes before a marker
            at += 1
            if at + 4 > end:
                yield None
                return
        marker = buf[at + 1]
        (length,) = struct.unpack_from(">H", buf, at + 2)
        body_end = at + 2 + length
        if length < 2 or body_end > end:
            break
        yield marker, at + 4, body_end
        at = body_end
    yield None


def jpeg_header(buf: bytes | memoryview) -> Header | None:
    """The header of a JPEG (``buf`` starts with its start-of-image marker), or None where Pillow must decide."""
    frame: tuple[int, int, str] | None = None
    exif: bytes | None = None
    xmp = False
    for segment in segments(buf):
        if segment is None:
            return None
        marker, start, body_end = segment
        if marker == START_OF_SCAN:
            if frame is None:
                return None
            orientation = exif_orientation(exif, xmp)
            return None if orientation is None else (*frame, orientation)
        if marker in FRAME_MARKERS:
            frame = frame_header(bytes(buf[start:body_end]))
            if frame is None:
                return None
        elif marker == QUANTISATION:
            if not quantisation_ok(bytes(buf[start:body_end])):
                return None
        elif marker in APPLICATION_MARKERS:
            body = bytes(buf[start:body_end])
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



SEQUENTIAL_HUFFMAN = frozenset({0xC0, 0xC1})
PROGRESSIVE = frozenset({0xC2, 0xCA})
"""Progressive frames (Huffman, arithmetic): their scans code one band of coefficients each."""
LOSSLESS = frozenset({0xC3, 0xCB})
"""Frames without quantisation tables."""
HIERARCHICAL = frozenset({0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF})
"""Differential (hierarchical) frames: libjpeg refuses them (``JERR_SOF_UNSUPPORTED``), and so does every decoder
here."""
STANDARD_HUFFMAN_TABLES = frozenset({0, 1})
"""Table slots libjpeg fills with the standard tables when a file defines none there (Motion-JPEG frames omit them)."""
HUFFMAN_TABLES = 0xC4
RESTART_INTERVAL = 0xDD
CHECKED_MARKERS = frozenset({*FRAME_MARKERS, QUANTISATION, HUFFMAN_TABLES, RESTART_INTERVAL, START_OF_SCAN})


@functools.lru_cache(maxsize=1024)
def code_space_problem(lengths: bytes) -> str | None:
    """Why libjpeg cannot build a Huffman table with these code counts by length (1 to 16 bits), or None: codes that
    overrun the code space, the all-ones code included (``jpeg_make_d_derived_tbl``). Cached: encoders write the
    same few tables."""
    code, first = 0, next((bits for bits, count in enumerate(lengths, 1) if count), 17)
    for bits in range(first, 17):
        code += lengths[bits - 1]
        if code >= 1 << bits:
            return f"its {bits}-bit codes overrun the code space"
        code <<= 1
    return None


def first_scan_problem(buf: bytes | memoryview) -> str | None:
    """Why a JPEG's first scan cannot be decoded from what its headers say, or None: the checks libjpeg (and so
    OpenCV) makes before it decodes a byte of scan data, read from the segments in front of the scan.

    A frame header whose length, size or sampling factors are wrong, or that asks for hierarchical coding; a
    quantisation or Huffman table segment that runs past itself or names a slot there is not; a scan header whose
    length cannot hold its components, that names a component the frame does not declare, or (progressive) an
    impossible band; a component of the scan whose quantisation table, or a Huffman table the scan uses, is never
    defined or cannot be built. Decoders disagree on such files (nvJPEG reads through some that libjpeg, DALI and
    nvImageCodec refuse, and DALI fails a whole batch on them), so every track refuses them before any decoder sees
    them. What the walk does not understand it leaves to the decoders (None): it never refuses a file libjpeg
    decodes (tests/test_jpeg_header.py).
    """
    checked = []
    for segment in segments(buf):
        if segment is None:
            return None
        marker, start, body_end = segment
        if marker in CHECKED_MARKERS:
            checked.append((marker, bytes(buf[start:body_end])))
            if marker == START_OF_SCAN:
                return segments_problem(tuple(checked))
    return None


@functools.lru_cache(maxsize=1024)
def segments_problem(segments: tuple[tuple[int, bytes], ...]) -> str | None:
    """``first_scan_problem`` of the frame, table and scan segments (marker, body) in front of a first scan, in file
    order. Cached: a camera writes the same segments in every photo of a size, a stream in every frame."""
    frame: tuple[int, list[tuple[int, int]]] | None = None  # (marker, [(component id, quantisation table)])
    quantisation: set[int] = set()
    huffman: dict[tuple[int, int], tuple[bytes, int]] = {}  # (0 DC / 1 AC, slot) -> (code counts, largest symbol)
    for marker, body in segments:
        if marker == START_OF_SCAN:
            if frame is None:
                return "corrupt JPEG: a scan before any frame header"
            return _scan_problem(body, *frame, quantisation, huffman)
        if marker in FRAME_MARKERS:
            if frame is not None:
                return "corrupt JPEG: a second frame header before the first scan"
            frame = (marker, [])
            problem = _frame_problem(marker, body, frame[1])
        elif marker == QUANTISATION:
            problem = _quantisation_problem(body, quantisation)
        elif marker == HUFFMAN_TABLES:
            problem = _huffman_problem(body, huffman)
        else:
            problem = None if len(body) == 2 else "corrupt JPEG: the restart interval segment's length is not 4"
        if problem:
            return problem
    return None


def _frame_problem(marker: int, body: bytes, components: list[tuple[int, int]]) -> str | None:
    if marker in HIERARCHICAL:
        return f"unsupported JPEG: hierarchical coding (frame marker {marker:#04x}), which no decoder here reads"
    if len(body) < 6 or len(body) != 6 + 3 * body[5]:
        return "corrupt JPEG: the frame header's length does not match its component count"
    height, width = struct.unpack_from(">HH", body, 1)
    if not (height and width and body[5]):
        return f"corrupt JPEG: the frame header gives {width}x{height} pixels and {body[5]} components"
    for k in range(body[5]):
        cid, sampling, table = body[6 + 3 * k : 9 + 3 * k]
        if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 15 <= 4):
            return f"corrupt JPEG: component {cid}'s sampling factors are {sampling >> 4}x{sampling & 15}"
        components.append((cid, table))
    return None


def _quantisation_problem(body: bytes, defined: set[int]) -> str | None:
    pos = 0
    while pos < len(body):
        precision, slot = body[pos] >> 4, body[pos] & 15
        if slot > 3:
            return f"corrupt JPEG: a quantisation table for slot {slot} (there are 4)"
        pos += 1 + 64 * (2 if precision else 1)
        if pos > len(body):
            return "corrupt JPEG: a quantisation table runs past its segment"
        defined.add(slot)
    return None


def _huffman_problem(body: bytes, defined: dict[tuple[int, int], tuple[bytes, int]]) -> str | None:
    pos = 0
    while pos < len(body):
        kind, slot = body[pos] >> 4, body[pos] & 15
        if kind > 1 or slot > 3:
            return f"corrupt JPEG: a Huffman table for class {kind}, slot {slot} (classes 0-1, slots 0-3)"
        lengths = body[pos + 1 : pos + 17]
        count = sum(lengths)
        if len(lengths) < 16 or count > 256 or pos + 17 + count > len(body):
            return "corrupt JPEG: a Huffman table runs past its segment"
        defined[kind, slot] = (lengths, max(body[pos + 17 : pos + 17 + count], default=0))
        pos += 17 + count
    return None


def _scan_problem(body: bytes, frame_marker: int, components: list[tuple[int, int]], quantisation: set[int],
                  huffman: dict[tuple[int, int], tuple[bytes, int]]) -> str | None:
    count = body[0] if body else 0
    if not 1 <= count <= 4 or len(body) != 4 + 2 * count:
        return (f"corrupt JPEG: the scan header's length ({len(body) + 2} bytes) cannot hold the {count} "
                "component(s) it names")
    tables_of = dict(components)
    if len(tables_of) < len(components):
        return None  # repeated component ids: libjpeg versions read them differently
    selected = [(body[1 + 2 * k], body[2 + 2 * k] >> 4, body[2 + 2 * k] & 15) for k in range(count)]
    if len({cid for cid, _, _ in selected}) < count:
        return None
    for cid, _, _ in selected:
        if cid not in tables_of:
            return f"corrupt JPEG: the scan header names component {cid}, which the frame does not declare"
    start, stop, high, low = body[1 + 2 * count], body[2 + 2 * count], body[3 + 2 * count] >> 4, body[3 + 2 * count] & 15
    if frame_marker in PROGRESSIVE:
        dc_band = start == 0
        if ((stop != 0) if dc_band else (start > stop or stop > 63 or count != 1)) or (high and low != high - 1) \
                or low > 13:
            return f"corrupt JPEG: the first scan's band ({start}-{stop}, approximation {high}/{low}) is impossible"
        uses = ([(0, dc) for _, dc, _ in selected] if not high else []) if dc_band else [(1, ac) for _, _, ac in selected]
    else:
        uses = [(0, dc) for _, dc, _ in selected] + [(1, ac) for _, _, ac in selected]
    if frame_marker in SEQUENTIAL_HUFFMAN or frame_marker == 0xC2:
        for kind, slot in uses:
            name = ("DC", "AC")[kind]
            if (kind, slot) not in huffman:
                if slot not in STANDARD_HUFFMAN_TABLES:
                    return f"corrupt JPEG: the scan uses {name} Huffman table {slot}, which is never defined"
                continue
            lengths, largest = huffman[kind, slot]
            problem = code_space_problem(lengths) or ("it holds a DC symbol over 15" if kind == 0 and largest > 15
                                                      else None)
            if problem:
                return f"corrupt JPEG: {name} Huffman table {slot} cannot be built: {problem}"
    if frame_marker not in LOSSLESS:
        for cid, _, _ in selected:
            if tables_of[cid] not in quantisation:
                return (f"corrupt JPEG: component {cid} uses quantisation table {tables_of[cid]}, which is never "
                        "defined")
    return None
