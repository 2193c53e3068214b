"""How many rows a CPU step decodes at once: threads per instance from the cores the server was given, and rows
mapped over them."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")
MAX_DECODE_THREADS = 16


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's cpuset), not the host's count,
    so that decode threads are shared out over the cores actually given to the server."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def decode_threads(asked: int, cores: int, instance_groups: list[dict], gpu_count: int) -> int:
    """Decode threads for each Track A instance: ``asked`` (the ``decode_threads`` parameter) when above 0.

    0 shares twice the host's cores out over the instances on the host (``instance_groups``
    as in the config Triton hands the backend; a KIND_GPU group's count is per GPU), at
    most 16 and at least 1. Every instance decodes on the same cores: on an H100 host (16
    cores, 4 instances) 16 threads each gave 1,113 images/s at concurrency 128, 4 each
    1,387 and 8 each 1,529 (results/h100_fp16_4inst_threads8).
    """
    if asked < 0:
        raise ValueError(f"parameter decode_threads must be 0 (automatic) or more, not {asked}")
    if asked:
        return asked
    instances = 0
    for group in instance_groups or [{"count": 1}]:
        devices = len(group.get("gpus", [])) or (max(gpu_count, 1) if group.get("kind") == "KIND_GPU" else 1)
        instances += int(group.get("count", 1)) * devices
    return max(1, min(MAX_DECODE_THREADS, 2 * cores // max(instances, 1)))


def map_rows(work: Callable[[U], T], rows: Sequence[U], pool: Executor | None = None) -> list[T]:
    """``work`` over ``rows``, in order: on ``pool``'s threads when given and there is more than one row."""
    return list(pool.map(work, rows)) if pool is not None and len(rows) > 1 else [work(row) for row in rows]
