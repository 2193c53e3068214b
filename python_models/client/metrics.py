"""Read Triton's Prometheus endpoint with ``prometheus_client``'s parser."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, families: Iterable[str], timeout: float = 10) -> dict[tuple[str, str], float]:
    """``{(family, model): value}`` for the named metric families (counters keyed by family, not ``*_total``)."""
    wanted = set(families)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in wanted:
            for sample in family.samples:
                key = (family.name, sample.labels.get("model", ""))
                values[key] = values.get(key, 0.0) + sample.value
    return values


def average_batch(before: dict, after: dict, model: str) -> tuple[float, float, float]:
    """(inferences, executions, inferences per execution) between two scrapes of one model."""
    count = after.get(("nv_inference_count", model), 0.0) - before.get(("nv_inference_count", model), 0.0)
    executions = after.get(("nv_inference_exec_count", model), 0.0) - before.get(("nv_inference_exec_count", model), 0.0)
    return count, executions, (count / executions if executions else 0.0)


SUMMARY_FAMILIES = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)


@dataclass(frozen=True)
class ModelMetrics:
    """One model between two scrapes."""

    requests: float
    failures: float
    inferences: float
    executions: float
    avg_batch: float
    """Inferences per execution: delta ``nv_inference_count`` / delta ``nv_inference_exec_count``."""
    queue_ms: float
    """Average time a successful request waited in the scheduler queue."""
    compute_ms: float
    """Average compute time (input + infer + output) per successful request."""
    compute_input_ms: float = 0.0
    compute_infer_ms: float = 0.0
    compute_output_ms: float = 0.0


def summarise(before: dict, after: dict, model: str) -> ModelMetrics:
    def delta(family: str) -> float:
        return after.get((family, model), 0.0) - before.get((family, model), 0.0)

    requests = delta("nv_inference_request_success")
    inferences, executions, avg_batch = average_batch(before, after, model)
    compute_us = sum(delta(f"nv_inference_compute_{part}_duration_us") for part in ("input", "infer", "output"))
    per_request = (lambda us: us / requests / 1000) if requests else (lambda us: 0.0)
    parts = [per_request(delta(f"nv_inference_compute_{part}_duration_us")) for part in ("input", "infer", "output")]
    return ModelMetrics(requests, delta("nv_inference_request_failure"), inferences, executions, avg_batch,
                        per_request(delta("nv_inference_queue_duration_us")), per_request(compute_us), *parts)


GPU_FAMILIES = frozenset({
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
    "nv_energy_consumption",
})
"""Triton's GPU metric families: exported only where it sees a GPU (through DCGM), never in the CPU profile."""
