"""Every track on the real server returns what the Ultralytics predictor returns for the same weights.

Tracks A and B are compared with the predictor itself; Tracks C and D with Track A as
served, as a user switching tracks would compare them.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SESSION, SAMPLE_NAMES
from conftest import assert_same_detections, reference_detections, tolerance

from python_models import contract as c
from python_models.export import repository as repo
from python_models.client import infer_grpc, infer_http, unpack_detections

PREDICTOR_TRACKS = (repo.PYTORCH, repo.TRT_ENSEMBLE)
DALI_TRACKS = tuple(repo.dali_ensemble_name(t) for t in c.DALI_TIERS)
VS_TRACK_A = (repo.END2END_ENSEMBLE, *DALI_TRACKS)


@pytest.fixture(scope="module")
def references(reference_model, sample_dir):
    return {name: reference_detections(reference_model, sample_dir / name) for name in SAMPLE_NAMES}


@pytest.fixture(scope="module")
def track_a(server, samples):
    client = server.grpc()
    return {name: unpack_detections(infer_grpc(client, repo.PYTORCH, [samples[name]]))[0] for name in SAMPLE_NAMES}


def test_all_six_public_models_are_ready(server):
    import urllib.request

    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready") as response:
        assert response.status == 200
    client = server.grpc()
    assert len(repo.PUBLIC_MODELS) == 6
    for model in repo.PUBLIC_MODELS:
        assert client.is_model_ready(model), model
    assert "not serving" not in server.log.read_text(), server.log_tail()


def _check_layout(outputs, rows):
    for tensor in SESSION["spec"].public_outputs():
        assert outputs[tensor.name].dtype == tensor.dtype and outputs[tensor.name].shape == (rows, *tensor.dims), tensor.name
    for row in range(rows):
        n = int(outputs[c.OUTPUT_NUM_DETECTIONS][row, 0])
        assert not outputs[c.OUTPUT_BOXES][row, n:].any() and not outputs[c.OUTPUT_SCORES][row, n:].any(), \
            "rows past num_detections must be zero"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", PREDICTOR_TRACKS)
def test_one_image_per_request_matches_ultralytics(server, samples, references, model, protocol):
    client = server.grpc() if protocol == "grpc" else server.http()
    infer = infer_grpc if protocol == "grpc" else infer_http
    for name in SAMPLE_NAMES:
        outputs = infer(client, model, [samples[name]])
        _check_layout(outputs, 1)
        (got,) = unpack_detections(outputs)
        assert_same_detections(got, references[name], *tolerance(model), f"{model}/{protocol}/{name}")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", PREDICTOR_TRACKS)
def test_four_images_per_request_match_ultralytics(server, samples, references, model, protocol):
    client = server.grpc() if protocol == "grpc" else server.http()
    infer = infer_grpc if protocol == "grpc" else infer_http
    names = SAMPLE_NAMES[:4]
    outputs = infer(client, model, [samples[name] for name in names])
    _check_layout(outputs, 4)
    for name, got in zip(names, unpack_detections(outputs)):
        assert_same_detections(got, references[name], *tolerance(model), f"{model}/{protocol}/batch/{name}")


@pytest.mark.parametrize("model", VS_TRACK_A)
def test_end2end_and_dali_tracks_match_track_a(server, samples, track_a, model):
    allowed = tolerance(model)
    client = server.grpc()
    for name in SAMPLE_NAMES:
        outputs = infer_grpc(client, model, [samples[name]])
        _check_layout(outputs, 1)
        assert_same_detections(unpack_detections(outputs)[0], track_a[name], *allowed, f"{model}/{name}")
    # Four images of different sizes and formats in one request, twice: rows must not mix.
    for names in (SAMPLE_NAMES[:4], SAMPLE_NAMES[1:]):
        outputs = infer_grpc(client, model, [samples[name] for name in names])
        _check_layout(outputs, 4)
        for name, got in zip(names, unpack_detections(outputs)):
            assert_same_detections(got, track_a[name], *allowed, f"{model}/batch/{name}")


@pytest.mark.parametrize("model", repo.PUBLIC_MODELS)
def test_boxes_are_in_original_image_pixels(server, samples, model):
    import cv2

    for name in SAMPLE_NAMES:
        height, width = cv2.imdecode(np.frombuffer(samples[name], np.uint8), cv2.IMREAD_COLOR).shape[:2]
        (got,) = unpack_detections(infer_grpc(server.grpc(), model, [samples[name]]))
        assert len(got) > 0, name
        assert got.boxes[:, [0, 2]].max() <= width and got.boxes[:, [1, 3]].max() <= height, name
        assert got.boxes.min() >= 0, name
