"""Read Triton's Prometheus endpoint with ``prometheus_client``'s parser."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

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
