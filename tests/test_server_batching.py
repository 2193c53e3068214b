"""Dynamic batching really batches, read from the server's own Prometheus metrics."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from python_models.client import infer_grpc, unpack_detections
from python_models.metrics import average_batch, scrape

TRACKS = ("yolo11_pytorch", "yolo11_trt", "yolo11_trt_end2end", "yolo11_dali_balanced")
BATCHED_LEAVES = ("yolo11_pytorch", "yolo11_preprocess", "yolo11_raw_trt", "yolo11_nms", "yolo11_end2end_trt",
                  "yolo11_dali_preprocess_balanced", "yolo11_end2end_trt_balanced")
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
