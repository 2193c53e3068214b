"""Bad input gets a clear INVALID_ARGUMENT, never a crash, and never spoils a good request batched with it."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from matching import assert_same_detections, reference_detections, tolerance
from tritonclient.utils import InferenceServerException

from python_models import repository as repo
from python_models.client import infer_grpc, infer_http, unpack_detections

PUBLIC = repo.PUBLIC_MODELS


def bad_inputs(samples) -> dict[str, tuple[bytes, str]]:
    rng = np.random.default_rng(0)
    return {
        "empty": (b"", "empty image"),
        "zeros": (bytes(64), "empty image"),
        "random": (rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a JPEG or PNG"),
        "truncated_jpeg": (samples["bus.jpg"][: len(samples["bus.jpg"]) // 2], "truncated JPEG"),
        "truncated_png": (samples["zidane_640x480.png"][:20000], "truncated PNG"),
        "jpeg_header_only": (samples["bus.jpg"][:600], "truncated JPEG"),
        # Headers intact, pixel data destroyed: only the decoder itself can tell.
        "corrupt_png_pixels": (corrupt_pixels(samples["zidane_640x480.png"]), "could not read the pixel data"),
    }


def corrupt_pixels(png: bytes) -> bytes:
    data = bytearray(png)
    start = data.find(b"IDAT") + 10
    data[start : start + 2000] = bytes(2000)
    return bytes(data)


def grpc_empty_request(client, model):
    inp = grpcclient.InferInput("images", [1, 0], "UINT8")
    inp.set_data_from_numpy(np.zeros((1, 0), np.uint8))
    return client.infer(model, [inp])


@pytest.mark.parametrize("model", PUBLIC)
def test_each_bad_input_is_rejected_with_a_clear_message(server, samples, model):
    client = server.grpc()
    for label, (data, message) in bad_inputs(samples).items():
        with pytest.raises(InferenceServerException) as err:
            grpc_empty_request(client, model) if not data else infer_grpc(client, model, [data])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT", (label, err.value.status(), err.value.message())
        assert message in err.value.message(), (label, err.value.message())
    assert client.is_server_ready() and client.is_model_ready(model)


@pytest.mark.parametrize("model", PUBLIC)
def test_bad_input_over_http_is_a_400(server, samples, model):
    with pytest.raises(InferenceServerException) as err:
        infer_http(server.http(), model, [b"\x89PNG\r\n\x1a\n" + bytes(100)])
    assert err.value.status() == "400", err.value.status()
    assert "truncated PNG" in err.value.message()


@pytest.mark.parametrize("model", PUBLIC)
def test_one_bad_row_rejects_its_request_and_names_the_row(server, samples, model):
    for bad, message in ((b"not an image at all", "not a JPEG or PNG"),
                         (corrupt_pixels(samples["zidane_640x480.png"]), "could not read the pixel data")):
        with pytest.raises(InferenceServerException) as err:
            infer_grpc(server.grpc(), model, [samples["bus.jpg"], bad])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT", (model, err.value.message())
        assert "images[1]" in err.value.message() and message in err.value.message(), (model, err.value.message())


@pytest.mark.parametrize("model", PUBLIC)
def test_good_requests_batched_with_bad_ones_still_get_correct_detections(
    server, samples, reference_model, sample_dir, model
):
    reference = reference_detections(reference_model, sample_dir / "zidane.jpg")
    bad = bad_inputs(samples)
    jobs = []
    for i in range(12):
        jobs.append(("good", samples["zidane.jpg"]) if i % 2 == 0 else ("bad", list(bad.values())[i % len(bad)][0] or b"x"))

    def send(job):
        kind, data = job
        client = server.grpc()
        try:
            return kind, unpack_detections(infer_grpc(client, model, [data]))[0]
        except InferenceServerException as exc:
            return kind, exc
        finally:
            client.close()

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(send, jobs))
    for kind, result in results:
        if kind == "good":
            assert not isinstance(result, Exception), result
            assert_same_detections(result, reference, *tolerance(model), f"{model}: good request next to bad ones")
        else:
            assert isinstance(result, InferenceServerException), "a bad image got detections"
            assert result.status() == "StatusCode.INVALID_ARGUMENT", result
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready") as response:
        assert response.status == 200


def test_wrong_datatype_and_wrong_input_name_are_rejected(server, samples):
    client = server.grpc()
    inp = grpcclient.InferInput("images", [1, 16], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 16), np.float32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("yolo11_trt", [inp])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "data-type" in err.value.message()
    inp = grpcclient.InferInput("image", [1, 16], "UINT8")
    inp.set_data_from_numpy(np.zeros((1, 16), np.uint8))
    with pytest.raises(InferenceServerException) as err:
        client.infer("yolo11_pytorch", [inp])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
