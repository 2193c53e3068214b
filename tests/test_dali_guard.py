"""Track D against the real server: the DALI twin fails as Triton's DALI backend fails (one bad row, every request
of its batch gets UNKNOWN), and each tier's guard in front of it is what keeps bad rows from failing good requests:
what a header check can see never reaches the leaf, and a batch the leaf fails is sent to it again in halves."""

from __future__ import annotations

import pytest
from conftest import assert_same_detections, burst, detections_of, tolerance
from tritonclient.utils import InferenceServerException

from python_models import contract as c
from python_models.export import repository as repo
from python_models.client import infer_grpc, unpack_detections
from python_models.client.bad_inputs import bad_inputs, decoder_only_damage
from python_models.client.metrics import scrape

BATCH_TIER = next(t for t in c.DALI_TIERS if t.name == "batch")  # the widest batching window: 5 ms
LEAF = repo.dali_preprocess_name(BATCH_TIER)
GUARD = repo.dali_guard_name(BATCH_TIER)
ENSEMBLE = repo.dali_ensemble_name(BATCH_TIER)
FAMILIES = ("nv_inference_exec_count", "nv_inference_count", "nv_inference_request_success",
            c.DALI_CPU_FALLBACK_METRIC)


def delta(before: dict, after: dict, family: str, model: str) -> float:
    return after.get((family, model), 0.0) - before.get((family, model), 0.0)


def test_the_dali_twin_fails_every_row_of_a_batch_that_holds_a_bad_row(server, samples):
    """What Triton's DALI backend does (ExecuteBatched sends one error to all responses): the twin must not be kinder.
    The leaf is not dynamically batched (each guard call is one DALI batch), so one request of eight rows is a batch."""
    bad = decoder_only_damage(samples["bus.jpg"], samples["zidane_640x480.png"])["png_pixel_data_damaged_crcs_intact"]
    client = server.grpc()
    with pytest.raises(InferenceServerException) as failed:
        infer_grpc(client, LEAF, [samples["bus.jpg"]] * 7 + [bad], outputs=[c.LETTERBOX_TRANSFORM])
    assert failed.value.status() == "StatusCode.UNKNOWN" and "DALI pipeline failed" in failed.value.message()
    # As the backend does, the pipeline serves the next batch.
    good = infer_grpc(client, LEAF, [samples["bus.jpg"]] * 7, outputs=[c.LETTERBOX_TRANSFORM])
    assert good[c.LETTERBOX_TRANSFORM].shape == (7, len(c.TRANSFORM_FIELDS))


def test_what_the_header_check_refuses_never_reaches_the_dali_leaf(server, samples):
    damaged = set(decoder_only_damage(samples["bus.jpg"], samples["zidane_640x480.png"]))
    catalogue = {label: bad for label, bad in bad_inputs(samples["bus.jpg"], samples["zidane_640x480.png"]).items()
                 if label not in damaged}
    reference = unpack_detections(infer_grpc(server.grpc(), repo.PYTORCH, [samples["zidane.jpg"]]))[0]
    rows, kinds = [], []
    for label, bad in catalogue.items():
        rows += [samples["zidane.jpg"], bad.data]
        kinds += ["good", label]
    before = scrape(server.metrics_url, FAMILIES)
    results = burst(server, ENSEMBLE, rows)
    after = scrape(server.metrics_url, FAMILIES)
    for kind, result in zip(kinds, results):
        if kind == "good":
            assert not isinstance(result, Exception), f"a good request next to bad ones failed: {result}"
            assert_same_detections(detections_of(result), reference, *tolerance(ENSEMBLE), "good request batched with bad rows")
        else:
            assert isinstance(result, InferenceServerException), f"{kind} got detections"
            assert result.status() == "StatusCode.INVALID_ARGUMENT", (kind, result)
            assert catalogue[kind].message in result.message(), (kind, result.message())
    good = kinds.count("good")
    # The leaf decoded the good rows only (a Python model counts an error response as a success: Triton 2.51).
    assert delta(before, after, "nv_inference_count", LEAF) == good, "a bad row reached the DALI leaf"
    assert delta(before, after, c.DALI_CPU_FALLBACK_METRIC, GUARD) == 0, "nothing failed in DALI, so nothing is decoded on the CPU"
    guard_rows = delta(before, after, "nv_inference_count", GUARD)
    guard_runs = delta(before, after, "nv_inference_exec_count", GUARD)
    assert guard_rows == len(rows) and guard_runs < len(rows), "good and bad rows must have met in the guard's batches"
