"""The CPU steps of tracks B and C (and Track A's decoding) on a thread pool: the same batch as one thread, rows in
request order, a bad request failing alone; the pool sized from the config parameter or the host's cores.

The adapter imports Triton's ``triton_python_backend_utils``, which exists only inside a Python-backend stub: the
``adapter`` fixture (conftest) provides the one call these functions make (reading an input tensor).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from ultralytics.utils import ASSETS

from python_models.client import pack_images
from python_models.contract import INPUT_IMAGES
from python_models.runtime.decode import InvalidImageError
from python_models.runtime.threads import available_cores, decode_threads


def _requests() -> list[dict]:
    bus, zidane = (ASSETS / "bus.jpg").read_bytes(), (ASSETS / "zidane.jpg").read_bytes()
    png = cv2.imencode(".png", cv2.resize(cv2.imread(str(ASSETS / "bus.jpg")), (300, 400)))[1].tobytes()
    rows = [[bus, zidane], [zidane, b"not an image at all"], [png], [bus[: len(bus) // 3]], [zidane, png, bus]]
    return [{INPUT_IMAGES: pack_images(r)} for r in rows]


def test_a_pool_letterboxes_the_same_batch_as_one_thread_and_a_bad_request_fails_alone(adapter):
    requests = _requests()
    alone = adapter.letterbox_requests(requests, adapter.BatchBuffer(640))
    alone = (alone[0].copy(), alone[1], alone[2])  # the buffer is reused by the next call
    with ThreadPoolExecutor(4) as pool:
        pooled = adapter.letterbox_requests(requests, adapter.BatchBuffer(640), pool)
    np.testing.assert_array_equal(pooled[0], alone[0])
    assert [t.to_array().tolist() for t in pooled[1]] == [t.to_array().tolist() for t in alone[1]]
    outcome = pooled[2]
    assert [type(o) for o in outcome] == [slice, InvalidImageError, slice, InvalidImageError, slice]
    assert "images[1]" in str(outcome[1]) and str(outcome[3]).startswith("images:")
    assert [(o.start, o.stop) for o in outcome if isinstance(o, slice)] == [(0, 2), (2, 3), (3, 6)]
    # Rows in request order: the PNG (400 high, 300 wide) is row 2 and the zidane (1280x720) row 3.
    assert pooled[1][2].to_array()[4:].tolist() == [300, 400] and pooled[1][3].to_array()[4:].tolist() == [1280, 720]


def _args(parameters: dict, groups: list[dict]) -> dict:
    return {"model_config": json.dumps({"parameters": {k: {"string_value": v} for k, v in parameters.items()},
                                        "instance_group": groups})}


def test_the_pool_is_sized_from_the_parameter_or_from_the_cores_and_instances(adapter):
    groups = [{"kind": "KIND_CPU", "count": 4}]
    pool = adapter.thread_pool(_args({"decode_threads": "3"}, groups))
    assert pool._max_workers == 3
    pool.shutdown()
    assert adapter.thread_pool(_args({"decode_threads": "1"}, groups)) is None, "one thread: no pool"
    automatic = decode_threads(0, available_cores(), groups, 0)
    pool = adapter.thread_pool(_args({"decode_threads": "0"}, groups))
    assert (pool._max_workers if pool else 1) == automatic
    if pool:
        pool.shutdown()
    assert adapter.threads_per_instance(_args({"threads": "5"}, groups), "threads") == 5  # the NMS step's
    assert adapter.threads_per_instance(_args({}, groups), "threads") == automatic


def test_track_d_guard_groups_requests_so_padding_stays_bounded():
    """The guard sends a batch's rows to the DALI leaf as one zero-padded array: one 4 MB photo among small ones must
    not pad them all to 4 MB, and every request is sent exactly once, its rows intact."""
    from python_models.runtime.decode import MAX_PADDING, padded_groups, payload, stack_padded

    rng = np.random.default_rng(0)
    shapes = [(1, 140_000)] * 30 + [(2, 50_000), (1, 4_000_000), (3, 137_000)]
    groups = padded_groups(shapes)
    assert sorted(i for g in groups for i in g) == list(range(len(shapes)))
    for group in groups:
        own = sum(shapes[i][0] * shapes[i][1] for i in group)
        padded = sum(shapes[i][0] for i in group) * max(shapes[i][1] for i in group)
        assert padded <= MAX_PADDING * own, (group, padded, own)
    (big,) = [g for g in groups if 31 in g]
    assert len(big) <= 2, "the 4 MB photo pads at most one small row to its length"
    assert len(groups) <= 3, "similar sizes share a request to the leaf"
    # Rows keep their bytes and lose only zero padding: what payload() strips again.
    arrays = [rng.integers(1, 256, (rows, length), dtype=np.uint8) for rows, length in [(1, 7), (2, 5), (1, 9)]]
    stacked = stack_padded(arrays)
    assert stacked.shape == (4, 9)
    for got, want in zip(stacked, [row for a in arrays for row in a]):
        np.testing.assert_array_equal(payload(got), want)
    assert stack_padded(arrays[:1]) is arrays[0]
