"""Tracks A and B on the real server return what the Ultralytics predictor returns for the same weights."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLE_NAMES
from matching import assert_same_detections, reference_detections

from python_models.client import infer_grpc, infer_http, unpack_detections
from python_models.contract import MAX_DETECTIONS, PUBLIC_OUTPUTS

TRACKS = ("yolo11_pytorch", "yolo11_trt")
MIN_IOU = 0.98
SCORE_TOL = 1e-3


@pytest.fixture(scope="module")
def references(reference_model, sample_dir):
    return {name: reference_detections(reference_model, sample_dir / name) for name in SAMPLE_NAMES}


def test_server_is_ready_and_serves_tracks_a_and_b(server):
    import urllib.request

    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready") as response:
        assert response.status == 200
    client = server.grpc()
    for model in TRACKS:
        assert client.is_model_ready(model), model


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", TRACKS)
def test_one_image_per_request_matches_ultralytics(server, samples, references, model, protocol):
    client = server.grpc() if protocol == "grpc" else server.http()
    infer = infer_grpc if protocol == "grpc" else infer_http
    for name in SAMPLE_NAMES:
        outputs = infer(client, model, [samples[name]])
        for spec in PUBLIC_OUTPUTS:
            assert outputs[spec.name].dtype == spec.dtype and outputs[spec.name].shape == (1, *spec.dims), spec.name
        (got,) = unpack_detections(outputs)
        assert_same_detections(got, references[name], MIN_IOU, SCORE_TOL, f"{model}/{protocol}/{name}")
        n = int(outputs["num_detections"][0, 0])
        assert not outputs["detection_boxes"][0, n:].any() and not outputs["detection_scores"][0, n:].any(), \
            "rows past num_detections must be zero"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", TRACKS)
def test_four_images_per_request_match_ultralytics(server, samples, references, model, protocol):
    client = server.grpc() if protocol == "grpc" else server.http()
    infer = infer_grpc if protocol == "grpc" else infer_http
    outputs = infer(client, model, [samples[name] for name in SAMPLE_NAMES])
    assert outputs["num_detections"].shape == (4, 1)
    assert outputs["detection_boxes"].shape == (4, MAX_DETECTIONS, 4)
    for name, got in zip(SAMPLE_NAMES, unpack_detections(outputs)):
        assert_same_detections(got, references[name], MIN_IOU, SCORE_TOL, f"{model}/{protocol}/batch/{name}")


def test_boxes_are_in_original_image_pixels(server, samples):
    import cv2

    for name in SAMPLE_NAMES:
        height, width = cv2.imdecode(np.frombuffer(samples[name], np.uint8), cv2.IMREAD_COLOR).shape[:2]
        (got,) = unpack_detections(infer_grpc(server.grpc(), "yolo11_trt", [samples[name]]))
        assert len(got) > 0, name
        assert got.boxes[:, [0, 2]].max() <= width and got.boxes[:, [1, 3]].max() <= height, name
        assert got.boxes.min() >= 0, name
