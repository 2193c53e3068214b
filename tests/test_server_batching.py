"""Dynamic batching really batches (read from the server's own Prometheus metrics), and batch-mates never get each
other's answers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import cv2
import numpy as np
import pytest
from conftest import SESSION, assert_same_detections, burst, detections_of, tolerance

from python_models.export import repository as repo
from python_models.client.matching import differences

from python_models.client import infer_grpc, unpack_detections
from python_models.client.metrics import average_batch, scrape

TRACKS = ("yolo11_pytorch", "yolo11_trt", "yolo11_trt_end2end", "yolo11_dali_balanced")
BATCHED_LEAVES = ("yolo11_pytorch", "yolo11_preprocess", "yolo11_raw_trt", "yolo11_nms", "yolo11_end2end_plan",
                  "yolo11_dali_preprocess_balanced", "yolo11_end2end_plan_balanced")
CLIENTS = 16
COUNTERS = ("nv_inference_count", "nv_inference_exec_count")
REQUESTS_PER_CLIENT = 3


def test_sixteen_concurrent_clients_are_batched(server, samples):
    before = scrape(server.metrics_url, COUNTERS)

    def client_loop(model: str) -> int:
        client = server.grpc()  # one client per thread: tritonclient clients are not thread-safe
        found = 0
        for _ in range(REQUESTS_PER_CLIENT):
            found += len(unpack_detections(infer_grpc(client, model, [samples["bus.jpg"]]))[0])
        client.close()
        return found

    models = list(TRACKS) * (CLIENTS // len(TRACKS))
    with ThreadPoolExecutor(CLIENTS) as pool:
        assert all(n > 0 for n in pool.map(client_loop, models))
    after = scrape(server.metrics_url, COUNTERS)
    for model in BATCHED_LEAVES:
        count, executions, ratio = average_batch(before, after, model)
        assert count >= CLIENTS // len(TRACKS) * REQUESTS_PER_CLIENT, (model, count)
        assert ratio > 1, f"{model}: {count} inferences in {executions} executions: no batching"


def distinct_images(samples) -> dict[str, bytes]:
    """Photos on which the test network finds many boxes, each set different from the others'."""
    bus = cv2.imdecode(np.frombuffer(samples["bus.jpg"], np.uint8), cv2.IMREAD_COLOR)
    return {
        "bus.jpg": samples["bus.jpg"],
        "bus_gray.jpg": samples["bus_gray.jpg"],
        "bus_480x1280.jpg": samples["bus_480x1280.jpg"],
        "bus_mirrored.jpg": cv2.imencode(".jpg", cv2.flip(bus, 1), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(),
    }


@pytest.mark.parametrize("model", repo.PUBLIC_MODELS)
def test_concurrent_requests_each_get_their_own_images_answer(server, samples, model):
    """Different images at once, batched: each answer equals its own image's single-request answer."""
    images = distinct_images(samples)
    names = list(images)
    client = server.grpc()
    alone = {name: unpack_detections(infer_grpc(client, model, [data]))[0] for name, data in images.items()}
    assert min(len(d) for d in alone.values()) >= 10, {n: len(d) for n, d in alone.items()}
    for a, b in combinations(names, 2):  # else handing one image's answer to another would go unnoticed
        assert differences(alone[a], alone[b], SESSION["spec"], *tolerance(model)), f"{a} and {b} get the same answer"
    order = [names[i % len(names)] for i in range(16)]
    steps = [model, *repo.leaf_models(repo.definitions_by_name(repo.default_spec())[model].config)]
    before = scrape(server.metrics_url, COUNTERS)
    results = burst(server, model, [images[name] for name in order])
    after = scrape(server.metrics_url, COUNTERS)
    for index, (name, result) in enumerate(zip(order, results)):
        assert not isinstance(result, Exception), result
        assert_same_detections(detections_of(result), alone[name], *tolerance(model), f"{model}: request {index} ({name})")
    assert max(average_batch(before, after, step)[2] for step in steps) > 1, f"{model}: nothing was batched"
