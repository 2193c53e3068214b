"""``yolo11-triton detect``'s engine without a server: the resume point after a kill mid-write, and how often a request
the server failed inside is sent again (a stand-in for the gRPC client answers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc
from tritonclient.utils import InferenceServerException

from python_models.client import bulk
from python_models.client.bulk import BulkDetector, JsonlWriter, RetryPolicy, SourceItem, done_keys, read_jsonl
from python_models.contract import (OUTPUT_BOXES, OUTPUT_CLASSES, OUTPUT_NUM_DETECTIONS, OUTPUT_SCORES, PYTORCH,
                                    ModelSpec)

SPEC = ModelSpec(names=("thing",))


def test_a_line_cut_short_by_a_kill_is_done_again_and_the_next_line_parses(tmp_path):
    out = tmp_path / "detections.jsonl"
    whole = [{"image": "a.jpg", "detections": []}, {"image": "b.jpg", "detections": []}]
    torn = json.dumps({"image": "c.jpg", "detections": [{"class_id": 0, "score": 0.9}]})[:25]
    out.write_text("".join(json.dumps(line) + "\n" for line in whole) + torn)

    assert done_keys(out) == {"a.jpg", "b.jpg"}, "the torn image is not done: it is sent again"
    writer = JsonlWriter(out)  # what the resumed run appends
    writer.write({"image": "c.jpg", "detections": []})
    writer.close()
    assert [line["image"] for line in read_jsonl(out)] == ["a.jpg", "b.jpg", "c.jpg"], out.read_text()
    assert done_keys(out) == {"a.jpg", "b.jpg", "c.jpg"}


class Answers:
    """``InferResult``: no detections for each image."""

    def __init__(self, images: int) -> None:
        self.arrays = {OUTPUT_NUM_DETECTIONS: np.zeros((images, 1), np.int32),
                       OUTPUT_BOXES: np.zeros((images, SPEC.max_det, 4), np.float32),
                       OUTPUT_SCORES: np.zeros((images, SPEC.max_det), np.float32),
                       OUTPUT_CLASSES: np.zeros((images, SPEC.max_det), np.int32)}

    def as_numpy(self, name: str) -> np.ndarray:
        return self.arrays[name]


class FailingServer:
    """A stand-in for ``tritonclient.grpc.InferenceServerClient``: fails the first ``failures`` attempts of every
    request with ``status``, then answers."""

    failures, status = 0, "StatusCode.INTERNAL"

    def __init__(self, url: str) -> None:
        self.attempts: dict[bytes, int] = {}

    def get_model_config(self, model: str) -> dict:
        return {"parameters": {"metadata": {"string_value": SPEC.metadata()}}}

    def async_infer(self, model, inputs, callback, outputs=None, client_timeout=None) -> None:
        rows = inputs[0]._get_content()  # the packed images: the same bytes every time a request is sent
        attempt = self.attempts[rows] = self.attempts.get(rows, 0) + 1
        if attempt <= self.failures:
            callback(None, InferenceServerException("Stub process 'yolo11_pytorch_0_0' is not healthy.",
                                                    status=self.status))
        else:
            callback(Answers(inputs[0].shape()[0]), None)


def detect(monkeypatch, failures: int, status: str = "StatusCode.INTERNAL") -> list[dict]:
    monkeypatch.setattr(FailingServer, "failures", failures)
    monkeypatch.setattr(FailingServer, "status", status)
    monkeypatch.setattr(tritonclient.grpc, "InferenceServerClient", FailingServer)
    monkeypatch.setattr(bulk, "image_size", lambda data: None)
    detector = BulkDetector(["127.0.0.1:1"], PYTORCH, concurrency=2,
                            retry=RetryPolicy(first_s=0.001, cap_s=0.01, give_up_s=5))
    lines: list[dict] = []
    items = [SourceItem(f"{k}.jpg", lambda k=k: f"image {k}".encode()) for k in range(3)]
    detector.run(items, lines.append)
    return sorted(lines, key=lambda line: line["image"])


@pytest.mark.parametrize("status", ["StatusCode.INTERNAL", "StatusCode.UNKNOWN"])
def test_a_request_the_server_failed_inside_twice_is_answered_on_the_third_attempt(monkeypatch, status):
    """A stub crash fails the requests it held (INTERNAL), a crashed step answers UNKNOWN: a reload heals either, so
    the image is sent again, three attempts in all (``RetryPolicy.fault_attempts``)."""
    lines = detect(monkeypatch, failures=2, status=status)
    assert [line["image"] for line in lines] == ["0.jpg", "1.jpg", "2.jpg"]
    assert all("error" not in line and line["detections"] == [] for line in lines), lines


def test_a_request_failed_inside_three_times_is_recorded_with_the_reason(monkeypatch):
    lines = detect(monkeypatch, failures=3)
    assert [line["image"] for line in lines] == ["0.jpg", "1.jpg", "2.jpg"]
    for line in lines:
        assert line["error"].startswith("gave up after 3 attempts: StatusCode.INTERNAL Stub process"), line
