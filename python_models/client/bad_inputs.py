"""The inputs every public model must refuse, and the unusual ones it must accept: one list for the tests and
for ``yolo11-triton check server``."""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from python_models.contract import MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class BadInput:
    data: bytes
    message: str
    """What the INVALID_ARGUMENT message must contain."""


def over_the_limit() -> tuple[int, int]:
    """(width, height) of the smallest image just over ``MAX_IMAGE_PIXELS``: one row more than the limit holds."""
    width = math.isqrt(MAX_IMAGE_PIXELS)
    return width, MAX_IMAGE_PIXELS // width + 1


def huge_png(width: int | None = None, height: int | None = None) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels (default: just over the limit), with almost no
    data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    width, height = (width, height) if width and height else over_the_limit()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b"")


def huge_jpeg(jpeg: bytes, width: int | None = None, height: int | None = None) -> bytes:
    """``jpeg`` with its baseline frame header rewritten to claim ``width`` x ``height`` pixels (default: just over
    the limit)."""
    width, height = (width, height) if width and height else over_the_limit()
    data = bytearray(jpeg)
    sof = data.find(b"\xff\xc0")
    if sof < 0:
        raise ValueError("not a baseline JPEG")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)  # SOF0: precision, then height and width
    return bytes(data)


def corrupt_pixels(png: bytes) -> bytes:
    """``png`` with 2000 bytes of its pixel data zeroed and every header intact."""
    data = bytearray(png)
    start = data.find(b"IDAT") + 10
    data[start : start + 2000] = bytes(2000)
    return bytes(data)


def jpeg_segments(jpeg: bytes) -> list[tuple[int, int, int]]:
    """(offset, marker, length) of every marker segment from the start of the image to the first scan header
    (inclusive): where the frame, table and scan headers lie."""
    segments, offset = [], 2
    while offset + 4 <= len(jpeg):
        if jpeg[offset] != 0xFF:
            raise ValueError(f"not a JPEG marker at byte {offset}")
        marker = jpeg[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        (length,) = struct.unpack_from(">H", jpeg, offset + 2)
        segments.append((offset, marker, length))
        if marker == 0xDA:
            return segments
        offset += 2 + length
    raise ValueError("no scan header: not a complete JPEG")


def _table_ids(jpeg: bytes, segments, marker: int) -> set[int]:
    """Table ids defined by the DQT (0xDB) or DHT (0xC4) segments, as (class << 4 | id) for DHT, id for DQT."""
    ids = set()
    for offset, kind, length in segments:
        if kind != marker:
            continue
        pos, end = offset + 4, offset + 2 + length
        while pos < end:
            info = jpeg[pos]
            ids.add(info if marker == 0xC4 else info & 0x0F)
            if marker == 0xC4:
                pos += 17 + sum(jpeg[pos + 1 : pos + 17])
            else:
                pos += 1 + (128 if info >> 4 else 64)
    return ids


def damaged_scans(jpeg: bytes) -> dict[str, bytes]:
    """``jpeg`` with its first scan undecodable from what its headers say: the scan header names more components than a
    JPEG may have, a component the frame does not have, or a Huffman table never defined, or is longer than its
    components; the frame names a quantisation table never defined. libjpeg (OpenCV, DALI's CPU decoder) and DALI's
    mixed decoder refuse each, and DALI fails its whole batch on them, while nvJPEG through torchvision decoded two
    of them on an H100: every track refuses them from the headers (``jpeg_header.first_scan_problem``), before any
    decoder sees them."""
    segments = jpeg_segments(jpeg)
    sos, _, sos_length = segments[-1]
    frame = next(s for s in segments if 0xC0 <= s[1] <= 0xCF and s[1] not in (0xC4, 0xC8, 0xCC))
    components = jpeg[frame[0] + 9]
    frame_ids = {jpeg[frame[0] + 10 + 3 * i] for i in range(components)}
    huffman = _table_ids(jpeg, segments, 0xC4)
    quant = _table_ids(jpeg, segments, 0xDB)

    def edit(offset: int, value: bytes) -> bytes:
        data = bytearray(jpeg)
        data[offset : offset + len(value)] = value
        return bytes(data)

    unknown_component = next(i for i in range(255, 0, -1) if i not in frame_ids)
    undefined_huffman = next(t for t in range(4) if (t not in {h & 0x0F for h in huffman if h >> 4 == 0})
                             and (t not in {h & 0x0F for h in huffman if h >> 4 == 1}))
    undefined_quant = next(t for t in range(4) if t not in quant)
    return {
        "scan_header_7_components": edit(sos + 4, bytes([7])),
        "scan_header_unknown_component": edit(sos + 5, bytes([unknown_component])),
        "scan_header_undefined_huffman_table": edit(sos + 6, bytes([undefined_huffman << 4 | undefined_huffman])),
        "scan_header_wrong_length": edit(sos + 2, struct.pack(">H", sos_length + 4)),
        "frame_undefined_quantisation_table": edit(frame[0] + 12, bytes([undefined_quant])),
    }


def png_damaged_behind_crcs(png: bytes) -> bytes:
    """``png`` with part of its compressed pixel data destroyed and every chunk CRC recomputed (a writer that
    checksummed damaged data): no header or CRC check finds it, libpng (OpenCV, DALI) refuses it."""
    data = bytearray(png)
    at = data.find(b"IDAT")
    (length,) = struct.unpack_from(">I", data, at - 4)
    span = min(2000, length // 2)
    data[at + 4 + length // 4 : at + 4 + length // 4 + span] = bytes(range(256)) * (span // 256) + bytes(span % 256)
    data[at + 4 + length : at + 8 + length] = struct.pack(">I", zlib.crc32(bytes(data[at : at + 4 + length])))
    return bytes(data)


def progressive_with_bad_later_table(jpeg: bytes) -> bytes:
    """``jpeg`` re-encoded progressive with a malformed Huffman table in front of its second scan (the first scan's
    headers are sound): libjpeg and DALI refuse it; nvJPEG is not shown to."""
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=90, progressive=True)
    progressive = bytearray(out.getvalue())
    later = progressive.find(b"\xff\xc4", progressive.find(b"\xff\xda"))
    progressive[later + 5] = 200  # 200 one-bit codes: more than a code space of two holds
    return bytes(progressive)


def decoder_only_damage(jpeg: bytes, png: bytes) -> dict[str, bytes]:
    """Damage no header check finds, which every decoder here refuses, and which DALI fails a whole batch on: the
    tracks' decoders refuse it alone (Track D's guard sends the failed batch to DALI again in parts)."""
    return {"png_pixel_data_damaged_crcs_intact": png_damaged_behind_crcs(png),
            "progressive_jpeg_bad_huffman_table_before_second_scan": progressive_with_bad_later_table(jpeg)}


def damaged_but_decodable(jpeg: bytes) -> dict[str, bytes]:
    """``jpeg`` damaged in ways some decoders read through (libjpeg, and so OpenCV, decodes through the first two with
    warnings): a marker where scan data should be, flipped bits, and a malformed Huffman table in front of a
    progressive JPEG's second scan, which libjpeg and DALI refuse and nvJPEG may not. Every track must answer these
    within the contract or refuse them alone; none may fail a batch-mate."""
    segments = jpeg_segments(jpeg)
    sos, _, sos_length = segments[-1]
    start = sos + 2 + sos_length
    middle = start + (len(jpeg) - start) // 2
    marker = bytearray(jpeg)
    marker[middle : middle + 4] = b"\xff\xc4\x00\x02"  # a Huffman-table marker where entropy-coded data should be
    flipped = bytearray(jpeg)
    rng = np.random.default_rng(0)
    for pos in rng.integers(start, len(jpeg) - 2, 200):
        if flipped[pos] != 0xFF and flipped[pos] ^ 0x5A != 0xFF:  # never make or break a marker
            flipped[pos] ^= 0x5A
    return {"marker_inside_scan": bytes(marker), "bit_flips_in_scan": bytes(flipped),
            "progressive_jpeg_bad_huffman_table_before_second_scan": progressive_with_bad_later_table(jpeg)}


EXIF_ORIENTATIONS = tuple(range(1, 9))
"""EXIF orientation tag values: 1 upright, 2 mirrored, 3 rotated 180, 4 flipped, 5-8 the transposed ones (phones
write 6 and 8 for portrait photos)."""


def exif_rotated(jpeg: bytes, orientation: int, quality: int = 95) -> bytes:
    """A JPEG that a viewer (and ``cv2.imread``, and Ultralytics) shows as ``jpeg``'s picture, but stored transformed
    with the EXIF orientation tag that undoes it: what phones write. Orientation 1 is the same picture, re-encoded."""
    from PIL import Image

    undo = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
            7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
    if orientation not in undo:
        raise ValueError(f"EXIF orientation must be 1 to 8, not {orientation}")
    with Image.open(io.BytesIO(jpeg)) as image:
        upright = image.convert("RGB")
    stored = upright if undo[orientation] is None else upright.transpose(undo[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=quality, exif=exif.tobytes())
    return out.getvalue()


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
        # Headers that claim one row more than the pixel limit holds: refused from the header, before any decoding.
        "huge_png_header": BadInput(huge_png(), f"over the limit of {MAX_IMAGE_PIXELS}"),
        "huge_jpeg_header": BadInput(huge_jpeg(jpeg), f"over the limit of {MAX_IMAGE_PIXELS}"),
        # Scan headers inconsistent with the frame: refused from the headers, before any decoder.
        **{label: BadInput(data, "corrupt JPEG") for label, data in damaged_scans(jpeg).items()},
        # Headers sound, data undecodable: only a decoder tells (and DALI's fails its whole batch). PNGs are decoded
        # by libpng on every track; the JPEG kind of this damage is among damaged_but_decodable, since nvJPEG (Track
        # A on a GPU) is not shown to refuse it.
        "png_pixel_data_damaged_crcs_intact": BadInput(png_damaged_behind_crcs(png), "corrupt PNG"),
    }
