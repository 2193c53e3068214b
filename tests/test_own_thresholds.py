"""Another head with other thresholds: the untrained yolov8n.yaml at 640, exported with --conf 0.3 --iou 0.5
--max-det 50, on its own real server (a module of its own, so only one extra server runs at a time)."""

from __future__ import annotations

import pytest
from conftest import assert_same_detections, reference_detections, start_server, stop_server, tolerance

from python_models import contract as c
from python_models.client import contract_violations, image_size, infer_grpc, served_spec, unpack_detections


@pytest.fixture(scope="module")
def v8_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("yolov8n"), "yolov8n.yaml", "--conf", "0.3", "--iou", "0.5",
                       "--max-det", "50")
    yield srv
    stop_server(srv)


def test_another_head_with_other_thresholds_is_served_by_every_track(v8_server, sample_dir):
    """yolov8n.yaml at 640 with --conf 0.3 --iou 0.5 --max-det 50: every track applies them, agrees with Track A,
    and Track A with the Ultralytics predictor at those thresholds."""
    from ultralytics import YOLO

    from python_models.export.artifacts import weights_pt

    client = v8_server.grpc()
    predictor = YOLO(str(weights_pt(v8_server.artifacts)))
    data = (sample_dir / "bus.jpg").read_bytes()
    track_a = None
    for model in c.PUBLIC_MODELS:
        spec = served_spec(client, model)
        assert (spec.num_classes, spec.imgsz, spec.conf, spec.iou, spec.max_det) == (80, 640, 0.3, 0.5, 50), model
        outputs = infer_grpc(client, model, [data])
        assert contract_violations(outputs, [image_size(data)], spec) == [], model
        (got,) = unpack_detections(outputs, spec)
        if model == c.PYTORCH:
            track_a = got
            reference = reference_detections(predictor, sample_dir / "bus.jpg", spec)
            assert_same_detections(got, reference, *tolerance(model, against="predictor"), what="predictor", spec=spec)
            assert got.scores.min() > 0.3 and len(got) <= 50
        else:
            assert_same_detections(got, track_a, *tolerance(model), what=model, spec=spec)
