"""Decoding accepts every JPEG/PNG a camera or pipeline produces and names what is wrong with the rest."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from ultralytics.utils import ASSETS

from python_models.contract import MAX_IMAGE_PIXELS
from python_models.runtime.decode import InvalidImageError, decode, probe
from python_models.runtime.threads import available_cores, decode_threads

BUS = (ASSETS / "bus.jpg").read_bytes()


def encode(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def test_jpeg_decodes_like_imread():
    np.testing.assert_array_equal(decode(BUS), cv2.imread(str(ASSETS / "bus.jpg")))


def test_trailing_zero_padding_is_ignored():
    padded = np.frombuffer(BUS + bytes(5000), np.uint8)
    np.testing.assert_array_equal(decode(padded), decode(BUS))


@pytest.mark.parametrize(
    "image, ext",
    [
        (np.full((40, 30, 4), 200, np.uint8), ".png"),  # alpha
        (np.full((40, 30), 60000, np.uint16), ".png"),  # 16-bit grey
        (np.full((40, 30), 90, np.uint8), ".jpg"),  # grayscale JPEG
        (np.full((1, 1, 3), 7, np.uint8), ".png"),  # 1x1
    ],
)
def test_unusual_but_valid_images_become_8bit_bgr(image, ext):
    out = decode(encode(image, ext))
    assert out.dtype == np.uint8 and out.shape == (*image.shape[:2], 3)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty image"),
        (bytes(100), "empty image"),
        (b"GIF89a" + bytes(50), "not a JPEG or PNG"),
        (np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes(), "not a JPEG or PNG"),
        (BUS[: len(BUS) // 3], "truncated JPEG"),
        (BUS[:-2], "truncated JPEG"),
        (encode(np.zeros((50, 50, 3), np.uint8), ".png")[:-20], "truncated PNG"),
    ],
)
def test_bad_bytes_raise_a_clear_error(data, message):
    with pytest.raises(InvalidImageError, match=message):
        decode(data)


def png_header_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def test_huge_header_is_rejected_before_decoding():
    with pytest.raises(InvalidImageError, match="over the limit"):
        decode(png_header_claiming(30000, 30000))
    assert 30000 * 30000 > MAX_IMAGE_PIXELS


def test_probe_reads_size_without_decoding():
    header = probe(BUS)
    assert (header.format, header.width, header.height) == ("JPEG", 810, 1080)


def test_decode_threads_share_the_host_cores_out_over_every_instance():
    four_on_gpu = [{"kind": "KIND_GPU", "count": 4}]
    assert decode_threads(0, cores=16, instance_groups=four_on_gpu, gpu_count=1) == 8  # measured best on the H100 host
    assert decode_threads(0, cores=16, instance_groups=four_on_gpu, gpu_count=2) == 4  # a KIND_GPU count is per GPU
    pinned = [{"kind": "KIND_GPU", "count": 2, "gpus": [0, 1, 2]}]
    assert decode_threads(0, cores=48, instance_groups=pinned, gpu_count=8) == 16  # 6 instances, capped at 16
    assert decode_threads(0, cores=2, instance_groups=[{"kind": "KIND_CPU", "count": 1}], gpu_count=0) == 4
    assert decode_threads(0, cores=2, instance_groups=[{"kind": "KIND_CPU", "count": 8}], gpu_count=0) == 1
    assert decode_threads(0, cores=4, instance_groups=[], gpu_count=0) == 8


def test_decode_threads_count_the_cores_the_server_was_given_not_the_host_s():
    """A server started under ``taskset`` (or in a container's cpuset) shares out only the cores it may use."""
    import os
    import subprocess
    import sys

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores to give the child one")
    code = "from python_models.runtime.threads import available_cores; print(available_cores())"
    one = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert one.stdout.strip() == "1"
    assert available_cores() == len(os.sched_getaffinity(0))


def test_decode_threads_set_by_hand_win_and_negative_ones_are_refused():
    assert decode_threads(3, cores=16, instance_groups=[{"kind": "KIND_GPU", "count": 4}], gpu_count=1) == 3
    with pytest.raises(ValueError, match="decode_threads"):
        decode_threads(-1, cores=16, instance_groups=[], gpu_count=1)


def test_damaged_png_data_is_found_by_its_chunk_crc_without_decoding():
    png = bytearray(encode(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8), ".png"))
    assert probe(bytes(png)).format == "PNG"
    idat = png.find(b"IDAT")
    damaged = png.copy()
    damaged[idat + 40] ^= 0xFF  # one byte of pixel data, lengths and markers intact
    with pytest.raises(InvalidImageError, match="corrupt PNG: chunk IDAT .* fails its CRC"):
        probe(bytes(damaged))
    # A chunk whose length runs past the data is a truncation, even when an IEND tag appears.
    long_chunk = bytes(png[:33]) + struct.pack(">I", 10**6) + b"IDAT" + bytes(png[37:])
    with pytest.raises(InvalidImageError, match="truncated PNG"):
        probe(long_chunk)


def test_a_padded_row_is_read_without_its_padding(monkeypatch):
    """Rows of a request are zero-padded to the longest; the decoder and the header parser get the image alone."""
    import cv2 as cv2_module

    from python_models.runtime import decode as decode_module

    padded = np.zeros(len(BUS) + 4_000_000, np.uint8)
    padded[: len(BUS)] = np.frombuffer(BUS, np.uint8)
    assert len(decode_module.payload(padded)) == len(BUS)
    assert decode_module.payload(padded).base is not None, "a view, not a copy"
    seen = []
    real = cv2_module.imdecode
    monkeypatch.setattr(decode_module.cv2, "imdecode", lambda buf, flags: seen.append(len(buf)) or real(buf, flags))
    assert (decode(padded) == decode(BUS)).all()
    assert seen == [len(BUS), len(BUS)]
    assert probe(padded) == probe(BUS)
    assert len(decode_module.payload(np.zeros(10, np.uint8))) == 0
    with pytest.raises(InvalidImageError, match="empty image"):
        probe(np.zeros(100_000, np.uint8))


def test_a_jpeg_cut_anywhere_after_its_first_scan_header_is_refused_as_truncated_and_a_whole_one_never_is():
    """The truncation check (an end-of-image marker after the last scan header) on a progressive JPEG, several
    scans, with an EXIF thumbnail whose own EOI comes before them: cut at every point after the first scan header
    it is refused, whole it is read; the same rule as finding the last scan header backwards, which it replaced."""
    import io

    from PIL import Image

    photo = Image.fromarray(cv2.cvtColor(cv2.imread(str(ASSETS / "bus.jpg")), cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = 6
    thumbnail = io.BytesIO()
    photo.resize((81, 108)).save(thumbnail, "JPEG")
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", progressive=True, quality=80, exif=exif.tobytes() + thumbnail.getvalue())
    data = buffer.getvalue()
    sos, eoi = b"\xff\xda", b"\xff\xd9"
    thumbnail_end = data.find(eoi)
    first_scan = data.find(sos, thumbnail_end)
    assert data.count(sos) > 3 and 0 < thumbnail_end < first_scan, "progressive, a thumbnail's EOI first"
    assert probe(data).orientation == 6
    for cut in range(first_scan + 2, len(data) - 1, 997):
        truncated = data[:cut]
        assert truncated.rfind(eoi) < truncated.rfind(sos), "the rule it replaced says truncated"
        with pytest.raises(InvalidImageError, match="truncated JPEG"):
            probe(truncated)
