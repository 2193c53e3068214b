"""The preprocessing arithmetic of every path, pinned to exact values: what each network or engine is handed.

The test network is smooth, so a parity test cannot see a pixel-level slip (dividing by 256 instead of 255
passed every one). Here a lossless PNG whose size needs no resize (640 x 320: only padding) goes through the CPU
letterbox (the reference), Track A's uint8-to-device path, the DALI graph in-process, and, as served, the uint8
tensors the preprocessing leaves hand the engines, then the exported graphs' own entry (cast, transpose, x 1/255);
each must equal the values computed here by hand: RGB, HWC uint8 between steps, then CHW, value x (1 / 255), rows
0-159 and 480-639 grey 114, the transform (1, 1, 0, 160, 640, 320).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from python_models import contract as c
from python_models.export import repository as repo
from python_models.client import pack_images
from python_models.runtime.decode import decode

WIDTH, HEIGHT = 640, 320
TOP = (c.DEFAULT_IMAGE_SIZE - HEIGHT) // 2


def pattern_bgr() -> np.ndarray:
    """Every value 0..255 in every channel, each channel in another order, so a swap or a scale shows."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([(x + 3 * y) % 256, (7 * x + y + 85) % 256, (255 - x - 5 * y) % 256], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def png() -> bytes:
    return cv2.imencode(".png", pattern_bgr())[1].tobytes()


SCALE = np.float32(1 / 255)
"""Every path multiplies by the float32 reciprocal of 255 (DALI's normalisation does too); Ultralytics divides,
which differs by at most one float32 ulp (6e-8)."""


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    """By hand: RGB planes of value x (1 / 255) between grey bands of 114 x (1 / 255), float32."""
    out = np.full((3, c.DEFAULT_IMAGE_SIZE, c.DEFAULT_IMAGE_SIZE), np.float32(c.PAD_VALUE) * SCALE, np.float32)
    rgb = pattern_bgr()[..., ::-1].transpose(2, 0, 1).astype(np.float32) * SCALE
    out[:, TOP : TOP + HEIGHT, :] = rgb
    return out


@pytest.fixture(scope="module")
def expected_uint8() -> np.ndarray:
    """By hand: what preprocessing hands an engine, RGB HWC uint8 between grey bands of 114."""
    out = np.full((c.DEFAULT_IMAGE_SIZE, c.DEFAULT_IMAGE_SIZE, 3), c.PAD_VALUE, np.uint8)
    out[TOP : TOP + HEIGHT] = pattern_bgr()[..., ::-1]
    return out


EXPECTED_TRANSFORM = np.array([1, 1, 0, TOP, WIDTH, HEIGHT], np.float32)


def test_the_cpu_letterbox_hands_exact_values(png, expected):
    from python_models.runtime.letterbox import letterbox

    image, transform = letterbox(decode(png), c.DEFAULT_IMAGE_SIZE)
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(transform.to_array(), EXPECTED_TRANSFORM)


def test_track_as_uint8_path_hands_the_network_exact_values(png, expected):
    from python_models.runtime.network import forward_padded
    from python_models.runtime.letterbox import letterbox_padded

    padded, transform = letterbox_padded(decode(png), c.DEFAULT_IMAGE_SIZE)
    seen = []

    class Capture(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x

    forward_padded(Capture(), padded[None], torch.device("cpu"))
    np.testing.assert_array_equal(seen[0][0].numpy(), expected)
    np.testing.assert_array_equal(transform.to_array(), EXPECTED_TRANSFORM)


def test_the_cpu_steps_uint8_letterbox_hands_exact_values(png, expected_uint8, expected):
    from python_models.runtime.letterbox import letterbox_rgb, network_input

    image, transform = letterbox_rgb(decode(png), c.DEFAULT_IMAGE_SIZE)
    np.testing.assert_array_equal(image, expected_uint8)
    np.testing.assert_array_equal(network_input(image), expected)
    np.testing.assert_array_equal(transform.to_array(), EXPECTED_TRANSFORM)


def test_the_dali_graph_hands_exact_values(png, expected_uint8):
    from python_models.runtime.dali_letterbox import letterbox_pipeline

    pipe = letterbox_pipeline(size=c.DEFAULT_IMAGE_SIZE, batch_size=1, num_threads=1, device_id=None, decoder_device="cpu", prefetch_queue_depth=1)
    pipe.build()
    pipe.feed_input(c.INPUT_IMAGES, [np.frombuffer(png, np.uint8)])
    images, transforms = pipe.run()
    np.testing.assert_array_equal(images.as_array()[0], expected_uint8)
    np.testing.assert_array_equal(transforms.as_array()[0], EXPECTED_TRANSFORM)


@pytest.mark.parametrize("leaf", [repo.PREPROCESS, *(repo.dali_preprocess_name(t) for t in c.DALI_TIERS)])
def test_the_served_preprocessing_hands_each_engine_exact_values(server, png, expected_uint8, leaf):
    rows = pack_images([png])
    tensor = grpcclient.InferInput(c.INPUT_IMAGES, list(rows.shape), "UINT8")
    tensor.set_data_from_numpy(rows)
    result = server.grpc().infer(leaf, [tensor])
    np.testing.assert_array_equal(result.as_numpy(c.LETTERBOXED_IMAGES)[0], expected_uint8)
    np.testing.assert_array_equal(result.as_numpy(c.LETTERBOX_TRANSFORM)[0], EXPECTED_TRANSFORM)


def network_input_of(graph_path, letterboxed: np.ndarray) -> np.ndarray:
    """What the network inside an exported graph reads: the graph's entry alone, run by ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    from python_models.export.end2end import NETWORK_INPUT

    model = onnx.load(str(graph_path))
    entry = onnx.utils.Extractor(model).extract_model([c.ONNX_INPUT], [NETWORK_INPUT])
    session = ort.InferenceSession(entry.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {c.ONNX_INPUT: letterboxed})[0]


@pytest.mark.parametrize("graph", ["raw", "end2end"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_exported_graphs_turn_the_uint8_image_into_the_networks_exact_input(server, expected_uint8, expected,
                                                                               graph, precision):
    """The engines take uint8 (a quarter of the bytes) and their graphs finish the preprocessing, in float32 in both
    precisions: the network reads exactly what the CPU letterbox used to hand it."""
    from python_models.export.artifacts import FP16_ONNX, end2end_onnx, raw_onnx

    path = (raw_onnx if graph == "raw" else end2end_onnx)(server.artifacts)
    path = path.with_name(FP16_ONNX) if precision == "fp16" else path
    got = network_input_of(path, expected_uint8[None])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[0], expected)
