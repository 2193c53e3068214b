"""The limits the contract states, at their edges: an image of exactly the pixel limit and a row of exactly the byte
limit are read, one pixel row or one byte more is refused naming the limit; each check fires when its limit moves.
(Rows per request: tests/test_server_bad_input.py, against the served configs.)"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from ultralytics.utils import ASSETS

from python_models.client.bad_inputs import huge_jpeg, huge_png, over_the_limit
from python_models.contract import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from python_models.runtime import decode as decoding
from python_models.runtime.decode import InvalidImageError, decode, probe

BUS = (ASSETS / "bus.jpg").read_bytes()


def at_the_limit() -> tuple[int, int]:
    """(width, height) holding as many pixels as the limit allows, with the width ``over_the_limit`` uses."""
    width = math.isqrt(MAX_IMAGE_PIXELS)
    return width, MAX_IMAGE_PIXELS // width


def verdict(data: bytes) -> str:
    try:
        probe(data)
    except InvalidImageError as exc:
        return f"refused: {exc}"
    return "read"


def test_the_edge_images_sit_one_pixel_row_apart_around_the_pixel_limit():
    (w, h), (over_w, over_h) = at_the_limit(), over_the_limit()
    assert (over_w, over_h) == (w, h + 1)
    assert w * h <= MAX_IMAGE_PIXELS < over_w * over_h


@pytest.mark.parametrize("header", [huge_png, lambda w=None, h=None: huge_jpeg(BUS, w, h)], ids=["png", "jpeg"])
def test_a_header_at_the_pixel_limit_is_read_and_one_row_more_is_refused_naming_the_limit(header, monkeypatch):
    under, over = header(*at_the_limit()), header()
    assert verdict(under) == "read"
    assert verdict(over).startswith("refused:") and f"over the limit of {MAX_IMAGE_PIXELS}" in verdict(over)
    # the limit moved down by one pixel row: the image at the limit is refused; up by one: the one over it is read
    monkeypatch.setattr(decoding, "MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS - at_the_limit()[0])
    assert verdict(under).startswith("refused:")
    monkeypatch.setattr(decoding, "MAX_IMAGE_PIXELS", math.prod(over_the_limit()))
    assert verdict(over) == "read"


def test_a_real_photo_of_the_pixel_limit_decodes():
    width, height = at_the_limit()
    photo = cv2.resize(cv2.imread(str(ASSETS / "bus.jpg")), (width, height), interpolation=cv2.INTER_NEAREST)
    encoded = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes()
    assert decode(encoded).shape == (height, width, 3)


def row_of(length: int) -> np.ndarray:
    """bus.jpg followed by bytes a decoder skips after the image's end, ``length`` bytes in all (not zeros: those
    would be taken for the padding of a request's rows; ending in an end-of-image marker, as a file with a trailer
    may, so the truncation check need not search back through them)."""
    row = np.full(length, 0x01, np.uint8)
    row[: len(BUS)] = np.frombuffer(BUS, np.uint8)
    row[-2:] = (0xFF, 0xD9)
    return row


def test_a_row_of_the_byte_limit_is_read_and_one_byte_more_is_refused_naming_the_limit(monkeypatch):
    under, over = row_of(MAX_IMAGE_BYTES), row_of(MAX_IMAGE_BYTES + 1)
    assert verdict(under) == "read"
    assert f"holds {MAX_IMAGE_BYTES + 1} bytes, over the limit of {MAX_IMAGE_BYTES}" in verdict(over)
    # zero padding does not count: the row is measured without it
    assert verdict(np.concatenate([np.frombuffer(BUS, np.uint8), np.zeros(MAX_IMAGE_BYTES, np.uint8)])) == "read"
    monkeypatch.setattr(decoding, "MAX_IMAGE_BYTES", MAX_IMAGE_BYTES - 1)
    assert verdict(under).startswith("refused:")
    monkeypatch.setattr(decoding, "MAX_IMAGE_BYTES", MAX_IMAGE_BYTES + 1)
    assert verdict(over) == "read"


def test_the_byte_limit_admits_every_image_within_the_pixel_limit():
    """Stored raw, at 16 bits in four channels, an image of the pixel limit still fits, headers included."""
    assert MAX_IMAGE_BYTES >= 8 * MAX_IMAGE_PIXELS + 1024
