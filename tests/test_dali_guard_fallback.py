"""Track D's guard in this process, in front of the DALI twin (``pb_utils``, a stand-in for Triton's module): when the
leaf fails a batch, the guard sends it again in parts, so every good request gets exactly the answer it gets alone
(DALI's pixels), only a row DALI refuses on its own is tried on the CPU, the metric counts those rows, and a leaf that
is not loaded is named, never worked around.

The server-side half (the twin failing as the DALI backend does, every tier, the metric as Prometheus sees it) is
tests/test_dali_guard.py and tests/test_server_real_photos.py; this one needs no server.
"""

from __future__ import annotations

import importlib
import json

import cv2
import numpy as np
from conftest import MODELS, StandInError, StandInResponse, counted
from google.protobuf import json_format
from ultralytics.utils import ASSETS

from python_models import contract as c
from python_models.client import pack_images
from python_models.client.bad_inputs import GIF, decoder_only_damage
from python_models.export import repository as repo
from python_models.export.cpu_configs import cpu_profile_config

TIER = next(t for t in c.DALI_TIERS if t.name == "streaming")  # the smallest batch: the twin's pipeline builds fastest
GUARD, LEAF = repo.dali_guard_name(TIER), repo.dali_preprocess_name(TIER)


class RecordedLeaf:
    """The DALI twin, recording how many rows each call held and whether it answered them; ``refused`` rows fail any
    call that holds them, as a row that DALI's GPU decoder cannot read and OpenCV can (decoders differ) would."""

    def __init__(self, twin, refused: tuple[bytes, ...] = ()) -> None:
        self.twin, self.calls, self.refused = twin, [], refused

    def execute(self, requests: list[dict]) -> list:
        if any(bytes(row).rstrip(b"\0") in self.refused for request in requests for row in request[c.INPUT_IMAGES]):
            responses = [StandInResponse(error=StandInError("DALI pipeline failed: a decoder refused it",
                                                            StandInError.UNKNOWN)) for _ in requests]
        else:
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


BUS, ZIDANE = (ASSETS / "bus.jpg").read_bytes(), (ASSETS / "zidane.jpg").read_bytes()
PNG = cv2.imencode(".png", cv2.resize(cv2.imread(str(ASSETS / "zidane.jpg")), (640, 360)))[1].tobytes()
DAMAGED = decoder_only_damage(BUS, PNG)["png_pixel_data_damaged_crcs_intact"]  # sound headers: only decoding fails


def guard_and_leaf(refused: tuple[bytes, ...] = ()):
    definitions = repo.definitions_by_name(repo.default_spec())
    leaf = RecordedLeaf(load(definitions[LEAF], repo.TWINS + "dali_twin_model"), refused)
    MODELS[LEAF] = leaf
    return load(definitions[GUARD], repo.RUNTIME + "dali_guard_model"), leaf


def answers(guard, requests: list[dict]) -> list:
    return [r.arrays() if not r.has_error() else r.error() for r in guard.execute(requests)]


def same(got: dict, own: dict) -> bool:
    return all(np.array_equal(got[name], own[name]) for name in (c.LETTERBOXED_IMAGES, c.LETTERBOX_TRANSFORM))


def test_a_batch_the_leaf_fails_is_sent_again_in_parts_and_every_good_request_gets_its_solo_answer(pb_utils):
    guard, leaf = guard_and_leaf()
    rows = [[BUS], [DAMAGED], [ZIDANE, PNG], [GIF], [BUS, BUS]]
    requests = [{c.INPUT_IMAGES: pack_images(r)} for r in rows]
    together = answers(guard, requests)
    calls = list(leaf.calls)
    assert not calls[0][1], "the leaf must have failed the first call, the whole batch"
    # DALI names the sample it failed on: the request holding it, and the others, are sent again (two calls).
    assert len(calls) == 3 and calls[1:] == [(1, False), (5, True)], calls
    for i in (1, 3):
        assert together[i].code() == StandInError.INVALID_ARG, f"request {i}: {together[i]}"
    assert "corrupt PNG" in together[1].message() and "not a JPEG or PNG" in together[3].message()
    # The damaged row, refused by DALI alone, was tried on the CPU (and refused there too): counted, nothing else.
    assert counted(c.DALI_CPU_FALLBACK_METRIC, model=GUARD, dali_model=LEAF) == 1
    for i in (0, 2, 4):
        (alone,) = answers(guard, [requests[i]])
        assert same(together[i], alone), f"request {i}: its answer changed next to a damaged row"
    assert counted(c.DALI_LEAF_READY_METRIC, model=GUARD, dali_model=LEAF) == 1


def test_without_dalis_sample_number_the_failed_batch_is_halved_down_to_the_bad_request(pb_utils, monkeypatch):
    guard, leaf = guard_and_leaf(refused=(DAMAGED,))  # this leaf's error names no sample
    requests = [{c.INPUT_IMAGES: pack_images([row])} for row in [BUS, ZIDANE, PNG, DAMAGED]]
    together = answers(guard, requests)
    # 4 requests, halves of 2, then 1: the bad one's half fails, and it alone; the rest are DALI's
    assert [rows for rows, _ in leaf.calls] == [4, 2, 2, 1, 1], leaf.calls
    assert together[3].code() == StandInError.INVALID_ARG
    for i in range(3):
        assert same(together[i], answers(guard, [requests[i]])[0]), f"request {i}"


def test_a_row_dali_refuses_alone_is_decoded_on_the_cpu_and_its_request_mates_stay_dalis(pb_utils, adapter):
    """A row DALI's decoder refuses and OpenCV reads (decoders differ on damaged scans): decoded on the CPU, as
    Track A does with a row nvJPEG refuses; the other rows of its request keep DALI's pixels; one row counted."""
    guard, leaf = guard_and_leaf(refused=(ZIDANE,))
    (mixed,) = answers(guard, [{c.INPUT_IMAGES: pack_images([BUS, ZIDANE])}])
    assert counted(c.DALI_CPU_FALLBACK_METRIC, model=GUARD, dali_model=LEAF) == 1
    (bus_alone,) = answers(guard, [{c.INPUT_IMAGES: pack_images([BUS])}])
    assert np.array_equal(mixed[c.LETTERBOXED_IMAGES][:1], bus_alone[c.LETTERBOXED_IMAGES])
    (on_cpu,) = adapter.letterboxed_responses([{c.INPUT_IMAGES: pack_images([ZIDANE])}], adapter.BatchBuffer(640))
    assert np.array_equal(mixed[c.LETTERBOXED_IMAGES][1:], on_cpu.arrays()[c.LETTERBOXED_IMAGES])
    np.testing.assert_allclose(mixed[c.LETTERBOX_TRANSFORM][1:], on_cpu.arrays()[c.LETTERBOX_TRANSFORM], rtol=1e-6)


def test_a_leaf_that_is_not_loaded_is_named_and_never_worked_around_on_the_cpu(pb_utils):
    guard, _ = guard_and_leaf()
    MODELS.pop(LEAF)  # as when the DALI backend could not load it
    (refused,) = answers(guard, [{c.INPUT_IMAGES: pack_images([BUS])}])
    assert refused.code() == StandInError.UNAVAILABLE and LEAF in refused.message()
    assert counted(c.DALI_LEAF_READY_METRIC, model=GUARD, dali_model=LEAF) == 0
    assert counted(c.DALI_CPU_FALLBACK_METRIC, model=GUARD, dali_model=LEAF) == 0
