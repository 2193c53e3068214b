"""Track D's guard in this process, in front of the DALI twin (``pb_utils``, a stand-in for Triton's module): when the
leaf fails a batch, each request still gets its own answer, and the fallback metric counts the rows the CPU decoded.

The server-side half (the twin failing as the DALI backend does, every tier, the metric as Prometheus sees it) is
tests/test_dali_guard.py and tests/test_server_real_photos.py; this one needs no server.
"""

from __future__ import annotations

import importlib
import json

import cv2
import numpy as np
from conftest import MODELS, StandInError, counted
from google.protobuf import json_format
from ultralytics.utils import ASSETS

from python_models import contract as c
from python_models.client import pack_images
from python_models.client.bad_inputs import GIF, damaged_scans
from python_models.export import repository as repo
from python_models.export.cpu_configs import cpu_profile_config

TIER = next(t for t in c.DALI_TIERS if t.name == "streaming")  # the smallest batch: the twin's pipeline builds fastest
GUARD, LEAF = repo.dali_guard_name(TIER), repo.dali_preprocess_name(TIER)


class RecordedLeaf:
    """The DALI twin, recording how many rows each call held and whether it answered them."""

    def __init__(self, twin) -> None:
        self.twin, self.calls = twin, []

    def execute(self, requests: list[dict]) -> list:
        responses = self.twin.execute(requests)
        for request, response in zip(requests, responses):
            self.calls.append((len(request[c.INPUT_IMAGES]), not response.has_error()))
        return responses

    def answered_rows(self) -> int:
        return sum(rows for rows, answered in self.calls if answered)


def load(definition: repo.ModelDefinition, entry: str):
    config = cpu_profile_config(definition) or definition.config
    model = importlib.import_module(entry).TritonPythonModel()
    model.initialize({"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
                      "model_instance_kind": "CPU", "model_instance_device_id": "0",
                      "model_instance_name": f"{config.name}_0_0"})
    return model


def test_a_batch_the_leaf_fails_is_answered_request_by_request_and_its_rows_are_counted(pb_utils):
    definitions = repo.definitions_by_name(repo.default_spec())
    leaf = RecordedLeaf(load(definitions[LEAF], repo.TWINS + "dali_twin_model"))
    MODELS[LEAF] = leaf
    guard = load(definitions[GUARD], repo.RUNTIME + "dali_guard_model")
    bus, zidane = (ASSETS / "bus.jpg").read_bytes(), (ASSETS / "zidane.jpg").read_bytes()
    png = cv2.imencode(".png", cv2.resize(cv2.imread(str(ASSETS / "zidane.jpg")), (640, 360)))[1].tobytes()
    damaged = damaged_scans(bus)["scan_header_undefined_huffman_table"]  # intact headers: only decoding fails
    rows = [[bus], [damaged], [zidane, png], [GIF], [bus, bus]]
    requests = [{c.INPUT_IMAGES: pack_images(r)} for r in rows]

    together = [r.arrays() if not r.has_error() else r.error() for r in guard.execute(requests)]
    fallback = counted(c.DALI_CPU_FALLBACK_METRIC, model=GUARD, dali_model=LEAF)
    probed_rows = sum(len(r) for r in rows) - 1  # the GIF is refused from its header, before the leaf
    assert leaf.calls and not all(answered for _, answered in leaf.calls), "the leaf must have failed a batch"
    assert fallback == probed_rows - leaf.answered_rows() > 0, (
        f"{c.DALI_CPU_FALLBACK_METRIC} must count every row the leaf left to the CPU: {leaf.calls}, counted {fallback}")

    for i in (1, 3):
        assert together[i].code() == StandInError.INVALID_ARG, f"request {i}: {together[i]}"
    assert "images" in together[1].message() and "images" in together[3].message()
    leaf.calls.clear()
    for i in (0, 2, 4):
        # Alone, each good request is answered by the leaf (DALI); in the failed batch, on the CPU: the same transform,
        # pixels within two grey levels on average (DALI's resize against OpenCV's).
        (alone,) = guard.execute([requests[i]])
        own = alone.arrays()
        got = together[i]
        np.testing.assert_allclose(got[c.LETTERBOX_TRANSFORM], own[c.LETTERBOX_TRANSFORM], rtol=1e-6,
                                   err_msg=f"request {i}")
        assert got[c.LETTERBOXED_IMAGES].shape == own[c.LETTERBOXED_IMAGES].shape, f"request {i}"
        difference = np.abs(got[c.LETTERBOXED_IMAGES].astype(np.int16) - own[c.LETTERBOXED_IMAGES]).mean()
        assert difference <= 2, f"request {i}: mean difference {difference:.2f} grey levels from its own answer"
    assert leaf.answered_rows() == 5, "alone, every good request is the leaf's"
