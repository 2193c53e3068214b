"""Track A's GPU decoding (``python_models.runtime.gpu_decode``) on every path a CPU can run: the device letterbox
on CPU tensors against the CPU letterbox, which rows go to nvJPEG, the fallbacks when it refuses a batch or a row,
and a row no decoder reads failing its own request only. A stand-in decoder (OpenCV, RGB CHW tensors) plays
nvJPEG; the real one is compared with the CPU letterbox on the GPU host by yolo11-triton bench gpu.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from ultralytics.utils import ASSETS

from python_models.client import pack_images
from python_models.contract import DEFAULT_IMAGE_SIZE, INPUT_IMAGES, PAD_VALUE
from python_models.runtime import gpu_decode
from python_models.runtime.decode import InvalidImageError, decode
from python_models.runtime.letterbox import letterbox_padded

SIZE = DEFAULT_IMAGE_SIZE


class StandInDecoder:
    """Decodes as nvJPEG is asked to (RGB CHW uint8 tensors of the stored pixels, EXIF orientation not applied, one
    call per batch), counting calls; like nvJPEG it fails the whole call when one row is one it refuses."""

    def __init__(self, refuse: set[int] | None = None, channels_reversed: bool = False):
        self.refuse = refuse or set()  # rows refused, by their byte length
        self.calls: list[int] = []
        self.channels_reversed = channels_reversed

    def __call__(self, rows: list[torch.Tensor]) -> list[torch.Tensor]:
        self.calls.append(len(rows))
        if any(len(row) in self.refuse for row in rows):
            raise RuntimeError("nvjpegDecodeBatched failed: NVJPEG_STATUS_BAD_JPEG")
        images = [cv2.imdecode(row.numpy(), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) for row in rows]
        order = cv2.COLOR_BGR2RGB if not self.channels_reversed else cv2.COLOR_BGR2BGRA
        return [torch.from_numpy(np.ascontiguousarray(cv2.cvtColor(i, order)[..., :3])).permute(2, 0, 1)
                for i in images]


def jpeg(image_bgr: np.ndarray, quality: int = 95) -> bytes:
    return cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def smooth(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like image (smooth gradients and blobs), so resize differences are the resize's, not noise's."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def pil_jpeg(mode: str, exif_orientation: int | None = None) -> bytes:
    image = Image.fromarray(cv2.cvtColor(smooth(240, 320, 3), cv2.COLOR_BGR2RGB)).convert(mode)
    buffer = io.BytesIO()
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def rows_of(*encoded: bytes) -> list[np.ndarray]:
    return list(pack_images(list(encoded)))  # zero-padded rows, as a request carries them


def expected_padded(data: bytes) -> np.ndarray:
    return letterbox_padded(decode(np.frombuffer(data, np.uint8)), SIZE)[0]


def letterbox_differences(got: np.ndarray, expected: np.ndarray) -> list[str]:
    """What the device letterbox may not do: differ by more than a grey level anywhere, or by one in many pixels."""
    diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    problems = []
    if diff.max() > 1:
        problems.append(f"max difference {diff.max()} grey levels")
    if (diff > 0).mean() > 0.2:
        problems.append(f"{(diff > 0).mean():.0%} of values differ")
    return problems


SAMPLES = {
    "bus.jpg": lambda: (ASSETS / "bus.jpg").read_bytes(),  # 810x1080: shrunk
    "zidane.jpg": lambda: (ASSETS / "zidane.jpg").read_bytes(),  # 1280x720: shrunk, padded top and bottom
    "small 150x200": lambda: jpeg(smooth(150, 200, 1)),  # enlarged
    "odd 641x639": lambda: jpeg(smooth(641, 639, 2)),  # round-half-to-even decides the width
    "exact 320x640": lambda: jpeg(smooth(320, 640, 4)),  # no resize, padding only
    "one pixel": lambda: jpeg(np.full((1, 1, 3), 200, np.uint8)),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_the_device_letterbox_is_the_cpu_letterbox_within_one_grey_level(name):
    data = SAMPLES[name]()
    (image,) = StandInDecoder()([torch.from_numpy(np.frombuffer(data, np.uint8).copy())])
    out = torch.zeros((1, SIZE, SIZE, 3), dtype=torch.uint8)
    (transform,) = gpu_decode.letterbox_on_device([image], SIZE, out)
    expected, expected_transform = letterbox_padded(decode(np.frombuffer(data, np.uint8)), SIZE)
    assert transform == expected_transform
    assert letterbox_differences(out[0].numpy(), expected) == []
    if expected_transform.pad_y or expected_transform.pad_x:
        assert (out[0, 0, 0] == PAD_VALUE).all() and (out[0, -1, -1] == PAD_VALUE).all()


def test_the_letterbox_comparison_fires_on_swapped_channels_and_on_an_antialiased_resize():
    data = SAMPLES["bus.jpg"]()
    expected = expected_padded(data)
    (swapped,) = StandInDecoder(channels_reversed=True)([torch.from_numpy(np.frombuffer(data, np.uint8).copy())])
    out = torch.zeros((1, SIZE, SIZE, 3), dtype=torch.uint8)
    gpu_decode.letterbox_on_device([swapped], SIZE, out)
    assert letterbox_differences(out[0].numpy(), expected)
    (image,) = StandInDecoder()([torch.from_numpy(np.frombuffer(data, np.uint8).copy())])
    smoothed = torch.nn.functional.interpolate(image[None].float(), size=(640, 480), mode="bilinear", antialias=True)
    planted = np.full((SIZE, SIZE, 3), PAD_VALUE, np.uint8)
    planted[:, 80:560] = smoothed[0].round().clamp(0, 255).byte().permute(1, 2, 0).flip(-1).numpy()
    assert letterbox_differences(planted, expected)


def test_images_of_one_size_are_resized_together_and_land_in_their_own_rows():
    bus, zidane = SAMPLES["bus.jpg"](), SAMPLES["zidane.jpg"]()
    images = StandInDecoder()([torch.from_numpy(np.frombuffer(d, np.uint8).copy()) for d in (bus, zidane, bus)])
    out = torch.zeros((5, SIZE, SIZE, 3), dtype=torch.uint8)
    transforms = gpu_decode.letterbox_on_device(images, SIZE, out, slots=[4, 0, 2])
    assert [t.width for t in transforms] == [810, 1280, 810]
    assert letterbox_differences(out[4].numpy(), expected_padded(bus)) == []
    assert letterbox_differences(out[0].numpy(), expected_padded(zidane)) == []
    assert torch.equal(out[2], out[4])
    assert not out[1].any() and not out[3].any(), "rows not named are left alone"


@pytest.mark.parametrize("data,goes_to_nvjpeg", [
    (SAMPLES["bus.jpg"], True),
    (lambda: pil_jpeg("L"), True),  # grey: nvJPEG's RGB output replicates it, as OpenCV does
    (lambda: cv2.imencode(".png", smooth(100, 120))[1].tobytes(), False),
    (lambda: pil_jpeg("RGB", exif_orientation=6), True),  # a phone photo: turned upright on the device
    (lambda: pil_jpeg("CMYK"), False),
], ids=["jpeg", "grey jpeg", "png", "exif-rotated jpeg", "cmyk jpeg"])
def test_rgb_or_grey_jpegs_go_to_nvjpeg_whatever_their_orientation(data, goes_to_nvjpeg):
    routed = gpu_decode.route(np.frombuffer(data(), np.uint8))
    assert isinstance(routed, gpu_decode.JpegRow) if goes_to_nvjpeg else routed is None


def test_a_row_no_path_accepts_is_refused_by_the_header_check():
    with pytest.raises(InvalidImageError, match="not a JPEG or PNG"):
        gpu_decode.route(np.frombuffer(b"GIF89a....", np.uint8))


def test_a_mixed_batch_lands_in_request_order_each_row_by_its_path():
    png = cv2.imencode(".png", smooth(300, 401, 5))[1].tobytes()
    rotated = pil_jpeg("RGB", exif_orientation=6)
    bus, zidane = SAMPLES["bus.jpg"](), SAMPLES["zidane.jpg"]()
    rows = rows_of(png, bus, rotated, zidane)
    decoder = StandInDecoder()
    out = torch.zeros((4, SIZE, SIZE, 3), dtype=torch.uint8)
    results = gpu_decode.letterbox_rows(rows, SIZE, decoder, out)
    assert decoder.calls == [3], "the three JPEGs in one call"
    np.testing.assert_array_equal(out[0].numpy(), expected_padded(png))  # CPU path: exactly the CPU letterbox
    assert out[2].shape == (SIZE, SIZE, 3) and results[2].width == 240, "EXIF rotation applied: 240 wide"
    for index, data in ((1, bus), (2, rotated), (3, zidane)):
        assert letterbox_differences(out[index].numpy(), expected_padded(data)) == []
    assert [r.width for r in results] == [401, 810, 240, 1280]


class CountingPool:
    """A thread pool that records how many rows each ``map`` hands to its threads."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool, self.mapped = ThreadPoolExecutor(2), []

    def map(self, work, rows):
        rows = list(rows)
        self.mapped.append(len(rows))
        return self.pool.map(work, rows)


def test_only_the_rows_the_cpu_decodes_go_to_the_threads_and_a_header_is_read_where_the_batch_is():
    """Reading a header holds the GIL: JPEG rows are routed on the calling thread, and the threads get the PNG and
    the bad row's work only, with the same answers as without threads."""
    png = cv2.imencode(".png", smooth(300, 401, 5))[1].tobytes()
    bus, zidane = SAMPLES["bus.jpg"](), SAMPLES["zidane.jpg"]()
    rows = rows_of(bus, png, zidane, bus, png)
    pool, alone = CountingPool(), torch.zeros((5, SIZE, SIZE, 3), dtype=torch.uint8)
    out = torch.zeros_like(alone)
    results = gpu_decode.letterbox_rows(rows, SIZE, StandInDecoder(), out, pool)
    assert pool.mapped == [2], "the two PNG rows, and no JPEG header, went to the threads"
    expected = gpu_decode.letterbox_rows(rows, SIZE, StandInDecoder(), alone)
    assert torch.equal(out, alone) and [r.width for r in results] == [r.width for r in expected]

    jpegs_only = CountingPool()
    gpu_decode.letterbox_rows(rows_of(bus, zidane, bus), SIZE, StandInDecoder(), out, jpegs_only)
    assert jpegs_only.mapped in ([], [0]), "a batch of JPEGs never waits on the threads"


def phone_photos(orient=gpu_decode.orient) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """bus.jpg stored with each EXIF orientation, letterboxed through the GPU path (one batch, the stand-in decoder,
    ``orient`` turning each upright), with the CPU letterbox of the same bytes (OpenCV applies the tag)."""
    from python_models.client.bad_inputs import EXIF_ORIENTATIONS, exif_rotated

    photos = [exif_rotated(SAMPLES["bus.jpg"](), o) for o in EXIF_ORIENTATIONS]
    out = torch.zeros((len(photos), SIZE, SIZE, 3), dtype=torch.uint8)
    decoder = StandInDecoder()
    original = gpu_decode.orient
    gpu_decode.orient = orient
    try:
        results = gpu_decode.letterbox_rows(rows_of(*photos), SIZE, decoder, out)
    finally:
        gpu_decode.orient = original
    assert decoder.calls == [len(photos)], "every phone photo decoded on the device, in one call"
    return {o: (out[i].numpy(), expected_padded(photos[i]), results[i]) for i, o in enumerate(EXIF_ORIENTATIONS)}


def test_phone_photos_are_decoded_on_the_device_and_turned_upright_there_as_opencv_turns_them():
    for orientation, (got, expected, transform) in phone_photos().items():
        assert letterbox_differences(got, expected) == [], f"EXIF orientation {orientation}"
        assert (transform.width, transform.height) == (810, 1080), "the transform of the upright picture"


def test_the_phone_photo_check_fires_when_the_orientation_is_ignored_or_mixed_up():
    ignored = phone_photos(lambda image, orientation: image)
    assert all(letterbox_differences(*ignored[o][:2]) for o in (2, 3, 4)), "mirrored or turned, not turned back"
    assert all(ignored[o][2].width == 1080 for o in (5, 6, 7, 8)), "stored sideways, left sideways"
    real = gpu_decode.orient
    mixed = phone_photos(lambda image, o: real(image, {6: 8, 8: 6}.get(o, o)))
    assert letterbox_differences(*mixed[6][:2]) and letterbox_differences(*mixed[8][:2])


def test_orient_refuses_an_orientation_exif_does_not_define():
    with pytest.raises(ValueError, match="1 to 8"):
        gpu_decode.orient(torch.zeros((3, 4, 5), dtype=torch.uint8), 9)


def test_a_batch_nvjpeg_refuses_is_retried_row_by_row_and_the_refused_row_decoded_on_the_cpu():
    bus, zidane = SAMPLES["bus.jpg"](), SAMPLES["zidane.jpg"]()
    refused = jpeg(smooth(200, 300, 6))
    decoder = StandInDecoder(refuse={len(refused)})
    out = torch.zeros((3, SIZE, SIZE, 3), dtype=torch.uint8)
    results = gpu_decode.letterbox_rows(rows_of(bus, refused, zidane), SIZE, decoder, out)
    assert decoder.calls == [3, 1, 1, 1], "the batch, then each row"
    assert not any(isinstance(r, Exception) for r in results)
    np.testing.assert_array_equal(out[1].numpy(), expected_padded(refused))  # decoded by OpenCV
    assert letterbox_differences(out[0].numpy(), expected_padded(bus)) == []
    assert letterbox_differences(out[2].numpy(), expected_padded(zidane)) == []


def test_a_row_neither_decoder_reads_fails_its_own_request_and_its_batch_mates_are_answered(adapter):
    bus, zidane = SAMPLES["bus.jpg"](), SAMPLES["zidane.jpg"]()
    corrupt = jpeg(smooth(200, 300, 7))  # passes the header check; planted failures in both decoders below

    def cpu(row: np.ndarray, size: int):
        if len(gpu_decode.payload(row)) == len(corrupt):
            raise InvalidImageError("corrupt JPEG: the decoder could not read the pixel data")
        return gpu_decode.cpu_letterbox(row, size)

    requests = [{INPUT_IMAGES: pack_images(r)} for r in ([bus], [zidane, corrupt], [zidane], [b"not an image"])]
    rows, counts = adapter.image_rows(requests)
    out = torch.zeros((len(rows), SIZE, SIZE, 3), dtype=torch.uint8)
    values = gpu_decode.letterbox_rows(rows, SIZE, StandInDecoder(refuse={len(corrupt)}), out, cpu=cpu)
    transforms, outcome, kept = adapter.group_rows(counts, values)
    assert isinstance(outcome[1], InvalidImageError) and "images[1]: corrupt JPEG" in str(outcome[1])
    assert isinstance(outcome[3], InvalidImageError) and "not a JPEG or PNG" in str(outcome[3])
    assert outcome[0] == slice(0, 1) and outcome[2] == slice(1, 2)
    assert kept == [0, 3] and [t.width for t in transforms] == [810, 1280]
    # The good rows fill the batch in order; the rejected request's good row (zidane) sits between them and is
    # left out by the adapter (Track A's _letterbox_on_gpu), so the network sees exactly the answered rows.
    good = [i for i, v in enumerate(values) if not isinstance(v, InvalidImageError)]
    assert good == [0, 1, 3]
    assert letterbox_differences(out[2].numpy(), expected_padded(zidane)) == []


def test_decode_gpu_is_refused_on_a_cpu_instance_and_unknown_values_are_refused():
    assert gpu_decode.decode_mode("gpu", on_gpu=True) == "gpu"
    assert gpu_decode.decode_mode("cpu", on_gpu=False) == "cpu"
    with pytest.raises(ValueError, match="nvJPEG needs a GPU instance"):
        gpu_decode.decode_mode("gpu", on_gpu=False)
    with pytest.raises(ValueError, match="must be one of"):
        gpu_decode.decode_mode("nvjpeg", on_gpu=True)


def test_track_a_hands_the_network_exactly_the_rows_of_the_requests_it_answers(adapter, monkeypatch):
    """Track A's adapter on the GPU path (a stand-in decoder, a CPU batch): a request rejected for one row leaves
    its good rows out of the batch, so the network's rows line up with the answered requests' transforms."""
    import importlib
    import sys

    monkeypatch.delitem(sys.modules, "python_models.runtime.triton.pytorch_model", raising=False)
    pytorch_model = importlib.import_module("python_models.runtime.triton.pytorch_model")
    model = pytorch_model.TritonPythonModel.__new__(pytorch_model.TritonPythonModel)
    model.torch, model.device, model.pool = torch, torch.device("cpu"), None
    model.spec = type("Spec", (), {"imgsz": SIZE})()
    bus, zidane = SAMPLES["bus.jpg"](), SAMPLES["zidane.jpg"]()
    small = jpeg(smooth(150, 200, 1))
    requests = [{INPUT_IMAGES: pack_images(r)} for r in ([bus], [zidane, b"not an image"], [small])]
    model.decoder = StandInDecoder()
    model.canvas = torch.zeros((4, SIZE, SIZE, 3), dtype=torch.uint8)
    padded, transforms, outcome = model._letterbox_on_gpu(requests)
    assert [t.width for t in transforms] == [810, 200] and len(padded) == 2
    assert isinstance(outcome[1], InvalidImageError) and outcome[0] == slice(0, 1) and outcome[2] == slice(1, 2)
    assert letterbox_differences(padded[0].numpy(), expected_padded(bus)) == []
    assert letterbox_differences(padded[1].numpy(), expected_padded(small)) == [], "not zidane, the rejected row"
    sys.modules.pop("python_models.runtime.triton.pytorch_model", None)


class FakeNvImageCodec:
    """Stands in for ``nvidia.nvimgcodec`` (not installable without CUDA): decodes with OpenCV into HWC RGB tensors
    (which export DLPack, as nvImageCodec's images do), applies the EXIF orientation when its params say so, as
    nvImageCodec does by default, and answers None for a row it cannot decode, as its batch decode does."""

    class BackendKind:
        HW_GPU_ONLY, GPU_ONLY = "hw", "cuda"

    class Backend:
        def __init__(self, kind):
            self.kind = kind

    class DecodeParams:
        def __init__(self, apply_exif_orientation: bool = True):
            self.apply_exif_orientation = apply_exif_orientation

    def __init__(self):
        outer = self

        class Decoder:
            def __init__(self, device_id: int, backends):
                outer.device_id, outer.backends = device_id, [b.kind for b in backends]

            def decode(self, rows, params=None):
                params = params or FakeNvImageCodec.DecodeParams()
                flags = cv2.IMREAD_COLOR | (0 if params.apply_exif_orientation else cv2.IMREAD_IGNORE_ORIENTATION)
                images = [cv2.imdecode(np.asarray(row), flags) for row in rows]
                return [torch.from_numpy(np.ascontiguousarray(i[..., ::-1])) if i is not None else None for i in images]

        self.Decoder = Decoder


@pytest.fixture
def fake_nvimgcodec(monkeypatch):
    import sys
    import types

    fake = FakeNvImageCodec()
    package = types.ModuleType("nvidia")
    package.nvimgcodec = fake
    monkeypatch.setitem(sys.modules, "nvidia", package)
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", fake)
    return fake


def nvimgcodec_letterbox(decoder, photos: list[bytes]):
    out = torch.zeros((len(photos), SIZE, SIZE, 3), dtype=torch.uint8)
    return out, gpu_decode.letterbox_rows(rows_of(*photos), SIZE, decoder, out)


def test_nvimgcodec_decodes_on_the_hardware_decoder_and_gives_what_the_cpu_letterbox_gives(fake_nvimgcodec):
    """``decode nvimgcodec``: the hardware decoder first, its CUDA decoder for the rest, on the instance's GPU; phone
    photos come out upright once (the tag left to ``orient``); a row it cannot decode goes to the CPU alone."""
    from python_models.client.bad_inputs import EXIF_ORIENTATIONS, exif_rotated

    decoder = gpu_decode.gpu_decoder("nvimgcodec", torch.device("cuda:1"))
    assert fake_nvimgcodec.device_id == 1 and fake_nvimgcodec.backends == ["hw", "cuda"]
    photos = [SAMPLES["bus.jpg"](), SAMPLES["zidane.jpg"](), *(exif_rotated(SAMPLES["bus.jpg"](), o)
                                                              for o in EXIF_ORIENTATIONS)]
    out, results = nvimgcodec_letterbox(decoder, photos)
    for index, data in enumerate(photos):
        assert letterbox_differences(out[index].numpy(), expected_padded(data)) == [], f"row {index}"
    assert [r.width for r in results[:2]] == [810, 1280]
    # A row the decoder answers None for (here: it cannot decode anything) is decoded on the CPU, same answer.
    refusing = lambda rows: [None] * len(rows)  # noqa: E731
    out, results = nvimgcodec_letterbox(refusing, photos[:3])
    assert letterbox_differences(out[2].numpy(), expected_padded(photos[2])) == [] and results[0].width == 810


def test_the_nvimgcodec_check_fires_when_the_decoder_turns_phone_photos_itself(fake_nvimgcodec, monkeypatch):
    from python_models.client.bad_inputs import exif_rotated

    monkeypatch.setattr(fake_nvimgcodec, "DecodeParams", lambda **_: FakeNvImageCodec.DecodeParams())
    photo = exif_rotated(SAMPLES["bus.jpg"](), 6)
    out, _ = nvimgcodec_letterbox(gpu_decode.gpu_decoder("nvimgcodec", torch.device("cuda:0")), [photo])
    assert letterbox_differences(out[0].numpy(), expected_padded(photo)), "turned twice: by the decoder and by orient"


def test_decode_nvimgcodec_without_nvimgcodec_fails_at_load_saying_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)
    with pytest.raises(RuntimeError, match="nvImageCodec is not installed"):
        gpu_decode.gpu_decoder("nvimgcodec", torch.device("cuda:0"))
    assert gpu_decode.gpu_decoder("cpu", torch.device("cpu")) is None
    with pytest.raises(ValueError, match="decode is nvimgcodec but this instance runs on the CPU"):
        gpu_decode.decode_mode("nvimgcodec", on_gpu=False)
