"""Bad input gets a clear INVALID_ARGUMENT, never a crash, and never spoils a good request batched with it.

Every public model, every input on the reliability list: what must be refused is refused
with a message naming the problem; what must be accepted (alpha, 16-bit and 1x1 PNG,
grayscale JPEG) is answered within the contract.
"""

from __future__ import annotations

import urllib.request

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import SESSION, assert_same_detections, burst, detections_of, reference_detections, tolerance
from tritonclient.utils import InferenceServerException

from python_models import contract as c
from python_models.export import repository as repo
from python_models.client import contract_violations, infer_grpc, infer_http, unpack_detections
from python_models.client.bad_inputs import bad_inputs as catalogue_of_bad_inputs
from python_models.client.bad_inputs import corrupt_pixels

PUBLIC = repo.PUBLIC_MODELS


def bad_inputs(samples) -> dict[str, tuple[bytes, str]]:
    catalogue = catalogue_of_bad_inputs(samples["bus.jpg"], samples["zidane_640x480.png"])
    return {label: (bad.data, bad.message) for label, bad in catalogue.items()}


def accepted_inputs(samples) -> dict[str, bytes]:
    bus = cv2.imdecode(np.frombuffer(samples["bus.jpg"], np.uint8), cv2.IMREAD_COLOR)
    return {
        "png_with_alpha": cv2.imencode(".png", cv2.cvtColor(bus, cv2.COLOR_BGR2BGRA))[1].tobytes(),
        "png_16_bit": cv2.imencode(".png", bus.astype(np.uint16) * 257)[1].tobytes(),
        "grayscale_jpeg": samples["bus_gray.jpg"],
        "one_pixel_png": cv2.imencode(".png", bus[:1, :1])[1].tobytes(),
    }


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
                         (corrupt_pixels(samples["zidane_640x480.png"]), "corrupt PNG")):
        with pytest.raises(InferenceServerException) as err:
            infer_grpc(server.grpc(), model, [samples["bus.jpg"], bad])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT", (model, err.value.message())
        assert "images[1]" in err.value.message() and message in err.value.message(), (model, err.value.message())


@pytest.mark.parametrize("model", PUBLIC)
def test_good_requests_batched_with_bad_ones_still_get_correct_detections(
    server, samples, reference_model, sample_dir, model
):
    """Every kind of bad row, each next to a good request with many detections, all at once."""
    reference = reference_detections(reference_model, sample_dir / "bus.jpg")
    assert len(reference) >= 20
    bad = bad_inputs(samples)
    rows, kinds = [], []
    for label, (data, _) in bad.items():
        rows += [samples["bus.jpg"], data]
        kinds += ["good", label]
    results = burst(server, model, rows)
    for kind, result in zip(kinds, results):
        if kind == "good":
            assert not isinstance(result, Exception), result
            assert_same_detections(detections_of(result), reference, *tolerance(model), f"{model}: good next to bad ones")
        else:
            assert isinstance(result, InferenceServerException), f"{kind} got detections"
            assert result.status() == "StatusCode.INVALID_ARGUMENT", (kind, result)
            assert bad[kind][1] in result.message(), (kind, result.message())
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready") as response:
        assert response.status == 200


@pytest.mark.parametrize("model", PUBLIC)
def test_unusual_but_valid_images_are_accepted(server, samples, model):
    """Alpha is dropped, 16 bits become 8, grayscale becomes colour (as cv2.imread does); 1x1 is letterboxed."""
    client = server.grpc()
    for label, data in accepted_inputs(samples).items():
        height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        outputs = infer_grpc(client, model, [data])
        assert contract_violations(outputs, [(width, height)], SESSION["spec"]) == [], (model, label)
        if label != "one_pixel_png":
            reference = unpack_detections(infer_grpc(client, "yolo11_pytorch", [data]))[0]
            assert_same_detections(unpack_detections(outputs)[0], reference, *tolerance(model), f"{model}/{label}")


@pytest.mark.parametrize("model", PUBLIC)
def test_wrong_datatype_and_wrong_input_name_are_rejected(server, model):
    client = server.grpc()
    inp = grpcclient.InferInput("images", [1, 16], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 16), np.float32))
    with pytest.raises(InferenceServerException) as err:
        client.infer(model, [inp])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "data-type" in err.value.message()
    inp = grpcclient.InferInput("image", [1, 16], "UINT8")
    inp.set_data_from_numpy(np.zeros((1, 16), np.uint8))
    with pytest.raises(InferenceServerException) as err:
        client.infer(model, [inp])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "image" in err.value.message()


@pytest.mark.parametrize("model", PUBLIC)
def test_a_request_of_max_batch_size_rows_is_answered_and_one_more_row_refused(server, samples, model):
    """The rows-per-request limit at its edge: the served config's max_batch_size rows answered, one more refused
    naming the limit."""
    limit = repo.definitions_by_name(repo.default_spec())[model].config.max_batch_size
    tiny = accepted_inputs(samples)["one_pixel_png"]
    outputs = infer_grpc(server.grpc(), model, [tiny] * limit)
    assert outputs[c.OUTPUT_NUM_DETECTIONS].shape == (limit, 1)
    with pytest.raises(InferenceServerException) as err:
        infer_grpc(server.grpc(), model, [tiny] * (limit + 1))
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT", err.value.message()
    assert f"must be <= {limit}" in err.value.message(), err.value.message()
    assert server.grpc().is_model_ready(model)


def test_a_frame_of_a_stream_is_one_image_and_two_are_refused(server, samples):
    from python_models.client.streams import TRACK_OUTPUT_NAMES

    client = server.grpc()
    stream = 36_000_001
    infer_grpc(client, c.TRACK, [samples["bus.jpg"]], outputs=TRACK_OUTPUT_NAMES, sequence_id=stream,
               sequence_start=True)
    with pytest.raises(InferenceServerException) as err:
        infer_grpc(client, c.TRACK, [samples["bus.jpg"]] * 2, outputs=TRACK_OUTPUT_NAMES, sequence_id=stream,
                   sequence_end=True)
    # Triton's sequence batcher refuses it before the model (which would too: "one image per request")
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "batch-size 1" in err.value.message()


def test_a_server_fault_is_internal_with_its_traceback_in_the_log(server, samples):
    """Client data gets INVALID_ARGUMENT; the server's own faults get INTERNAL, and the log says where."""
    with pytest.raises(InferenceServerException) as err:
        infer_grpc(server.grpc(), "yolo11_faulty", [samples["bus.jpg"]])
    assert err.value.status() == "StatusCode.INTERNAL", err.value
    assert "MemoryError: planted fault" in err.value.message()
    log = server.log.read_text(errors="replace")
    assert "Traceback (most recent call last)" in log and "in _run" in log and "planted fault" in log
