"""Serving your own detector: any class count, any input size, your thresholds, class names in every answer.

The trained test detector (tests/assets/shapes_yolo11.pt, yolo11-triton dev train-shapes) on its own real server,
started as a user starts it with tools/serve.py: three classes with their own names at --imgsz 320, with ground
truth, so accuracy is measured, not assumed. (Another head with other thresholds: test_own_thresholds.py.)
"""

from __future__ import annotations


import cv2
import numpy as np
import pytest
from conftest import ROOT, assert_same_detections, reference_detections, start_server, stop_server, tolerance

from python_models import contract as c
from python_models.export import shapes_dataset as shapes
from python_models.client import contract_violations, infer_grpc, served_spec, unpack_detections
from python_models.client.evaluation import GroundTruth, coco_map

SHAPES_WEIGHTS = ROOT / "tests" / "assets" / "shapes_yolo11.pt"
HELD_OUT = 80
"""Held-out synthetic images the mAP is measured on (never trained or validated on)."""
MAP_TOLERANCE = 0.01
MIN_MAP = 0.6
"""What the trained detector must reach on the held-out set, by the Ultralytics predictor: a real detector."""
SERVED_MODELS = (*c.PUBLIC_MODELS, c.ULTRALYTICS_RAW_TRT)


@pytest.fixture(scope="module")
def shapes_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("shapes"), str(SHAPES_WEIGHTS), "--imgsz", str(shapes.IMAGE_SIZE))
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def held_out() -> list:
    return shapes.test_set(HELD_OUT)


@pytest.fixture(scope="module")
def shapes_predictor():
    from ultralytics import YOLO

    return YOLO(str(SHAPES_WEIGHTS))


def test_every_public_model_and_the_raw_leaf_state_the_detectors_names_size_and_thresholds(shapes_server):
    client = shapes_server.grpc()
    for model in SERVED_MODELS:
        spec = served_spec(client, model)
        assert spec.names == shapes.NAMES and spec.imgsz == shapes.IMAGE_SIZE, model
        assert (spec.conf, spec.iou, spec.max_det) == (c.DEFAULT_CONF, c.DEFAULT_IOU, c.DEFAULT_MAX_DET), model
    config = client.get_model_config(c.ULTRALYTICS_RAW_TRT, as_json=True)["config"]
    assert [int(d) for d in config["input"][0]["dims"]] == [3, 320, 320], "the network's float input, as Ultralytics sends it"
    engine = client.get_model_config(c.RAW_TRT, as_json=True)["config"]
    assert [int(d) for d in engine["input"][0]["dims"]] == [320, 320, 3], "Track B's engine reads uint8 RGB HWC"
    assert [int(d) for d in config["output"][0]["dims"]] == [4 + 3, 40 * 40 + 20 * 20 + 10 * 10]


def test_ultralytics_own_triton_client_gets_the_served_names(shapes_server, held_out, shapes_predictor):
    """YOLO("grpc://host:port/yolo11_ultralytics_raw_trt") as a new user would: names, not class0, and the same
    detections."""
    from ultralytics import YOLO

    image = cv2.imdecode(np.frombuffer(held_out[0][0], np.uint8), cv2.IMREAD_COLOR)
    remote = YOLO(f"grpc://{shapes_server.grpc_url}/{c.ULTRALYTICS_RAW_TRT}", task="detect")
    (result,) = remote.predict(image, imgsz=shapes.IMAGE_SIZE, verbose=False)
    assert result.names == dict(enumerate(shapes.NAMES)), result.names
    (local,) = shapes_predictor.predict(image, imgsz=shapes.IMAGE_SIZE, verbose=False)
    assert len(result.boxes) == len(local.boxes) > 0
    np.testing.assert_allclose(result.boxes.xyxy.numpy(), local.boxes.xyxy.numpy(), atol=0.5)


def test_python_models_client_returns_names_with_each_detection(shapes_server, held_out):
    client = shapes_server.grpc()
    spec = served_spec(client, c.TRT_ENSEMBLE)
    data, truth, _ = held_out[0]
    (found,) = unpack_detections(infer_grpc(client, c.TRT_ENSEMBLE, [data]), spec)
    assert len(found) and found.names == tuple(shapes.NAMES[k] for k in found.classes)
    assert sorted(found.names) == sorted(shapes.NAMES[b.cls] for b in truth), "these shapes are easy: all found"


def _truth(item) -> GroundTruth:
    _, boxes, (width, height) = item
    return GroundTruth(np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], np.float32).reshape(-1, 4),
                       np.array([b.cls for b in boxes], np.int32), width, height)


@pytest.fixture(scope="module")
def predictor_map(held_out, shapes_predictor, shapes_server):
    spec = served_spec(shapes_server.grpc(), c.PYTORCH)
    found = [reference_detections(shapes_predictor, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), spec)
             for data, _, _ in held_out]
    return coco_map([_truth(item) for item in held_out], found, spec.num_classes)


def test_the_trained_detector_is_a_real_detector(predictor_map):
    assert predictor_map.map50_95 >= MIN_MAP, predictor_map


@pytest.mark.parametrize("model", c.PUBLIC_MODELS)
def test_every_track_reaches_the_predictors_map_on_held_out_images(shapes_server, held_out, predictor_map, model):
    client = shapes_server.grpc()
    spec = served_spec(client, model)
    found = []
    for start in range(0, len(held_out), 8):
        batch = [data for data, _, _ in held_out[start:start + 8]]
        outputs = infer_grpc(client, model, batch)
        assert contract_violations(outputs, [size for _, _, size in held_out[start:start + 8]], spec) == []
        found += unpack_detections(outputs, spec)
    served = coco_map([_truth(item) for item in held_out], found, spec.num_classes)
    print(f"{model}: mAP50-95 {served.map50_95:.4f} (predictor {predictor_map.map50_95:.4f}), "
          f"mAP50 {served.map50:.4f} (predictor {predictor_map.map50:.4f})")
    assert abs(served.map50_95 - predictor_map.map50_95) <= MAP_TOLERANCE, (served, predictor_map)


def test_the_map_check_fires_on_wrong_boxes(held_out, predictor_map, shapes_predictor, shapes_server):
    """Boxes shifted by 3 pixels cost more than the tolerance: the comparison above can fail."""
    spec = served_spec(shapes_server.grpc(), c.PYTORCH)
    shifted = []
    for data, _, _ in held_out:
        d = reference_detections(shapes_predictor, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), spec)
        shifted.append(type(d)(d.boxes + np.float32(3), d.scores, d.classes))
    wrong = coco_map([_truth(item) for item in held_out], shifted, spec.num_classes)
    assert predictor_map.map50_95 - wrong.map50_95 > 5 * MAP_TOLERANCE, (wrong, predictor_map)


@pytest.mark.parametrize("model", c.PUBLIC_MODELS)
def test_tracks_agree_with_track_a_and_track_a_with_the_predictor(shapes_server, held_out, shapes_predictor, model):
    client = shapes_server.grpc()
    spec = served_spec(client, model)
    for data, _, _ in held_out[:6]:
        (track_a,) = unpack_detections(infer_grpc(client, c.PYTORCH, [data]))
        (got,) = unpack_detections(infer_grpc(client, model, [data]))
        assert_same_detections(got, track_a, *tolerance(model), what=model, spec=spec)
        if model == c.PYTORCH:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert_same_detections(got, reference_detections(shapes_predictor, image, spec),
                                   *tolerance(model, against="predictor"), what="predictor", spec=spec)


@pytest.mark.parametrize("model", c.PUBLIC_MODELS)
def test_confident_detections_move_when_the_pixels_move(shapes_server, held_out, model):
    """Shift the picture 24 px right and 16 px down: every track's boxes follow, with the same classes."""
    client = shapes_server.grpc()
    data, _, _ = held_out[6]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    # The same image size, so the letterbox scale is the same and only the position changes.
    moved = np.empty_like(image)
    moved[:] = np.median(image.reshape(-1, 3), 0).astype(np.uint8)
    moved[16:, 24:] = image[:-16, :-24]
    (before,) = unpack_detections(infer_grpc(client, model, [data]))
    (after,) = unpack_detections(infer_grpc(client, model, [cv2.imencode(".png", moved)[1].tobytes()]))
    height, width = image.shape[:2]
    # Shapes away from the border: at the border the new flat margin changes what is there, not only where.
    inside = [(box, cls) for box, cls, score in zip(before.boxes, before.classes, before.scores)
              if score > 0.5 and box[:2].min() >= 8 and box[2] <= width - 24 - 8 and box[3] <= height - 16 - 8]
    assert len(inside) >= 2, f"{model}: the test needs confident detections inside the image: {before}"
    for box, cls in inside:
        expected = box + np.array([24, 16, 24, 16], np.float32)
        distance = np.abs(after.boxes - expected).max(1)
        best = int(distance.argmin())
        assert distance[best] <= 3 and after.classes[best] == cls, (model, box, after.boxes)
        assert np.abs(after.boxes - box).max(1).min() > 3, "boxes left where they were would have passed"
