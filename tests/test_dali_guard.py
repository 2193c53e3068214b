"""Track D against the real server: the DALI twin fails as Triton's DALI backend fails (one bad row, every request
of its batch gets UNKNOWN), and each tier's guard in front of it is what keeps bad rows from failing good requests:
what a header check can see never reaches the leaf, and a batch the leaf fails is answered row by row on the CPU."""

from __future__ import annotations

import queue
import time


import tritonclient.grpc as grpcclient
from conftest import assert_same_detections, burst, detections_of, tolerance
from tritonclient.utils import InferenceServerException

from python_models import contract as c
from python_models.export import repository as repo
from python_models.client import infer_grpc, pack_images, unpack_detections
from python_models.client.bad_inputs import bad_inputs, damaged_scans
from python_models.client.metrics import scrape

BATCH_TIER = next(t for t in c.DALI_TIERS if t.name == "batch")  # the widest batching window: 5 ms
LEAF = repo.dali_preprocess_name(BATCH_TIER)
GUARD = repo.dali_guard_name(BATCH_TIER)
ENSEMBLE = repo.dali_ensemble_name(BATCH_TIER)
FAMILIES = ("nv_inference_exec_count", "nv_inference_count", "nv_inference_request_success",
            c.DALI_CPU_FALLBACK_METRIC)


def delta(before: dict, after: dict, family: str, model: str) -> float:
    return after.get((family, model), 0.0) - before.get((family, model), 0.0)


def test_the_dali_twin_fails_every_request_of_a_batch_that_holds_a_bad_row(server, samples):
    """What Triton's DALI backend does (ExecuteBatched sends one error to all responses): the twin must not be kinder."""
    # Eight requests (a preferred batch size, so the batcher takes them whole) queue up while the leaf's one
    # instance is busy with a large request, then run as one batch.
    rows = [samples["bus.jpg"]] * 7 + [b"certainly not an image, but long enough to be sent"]
    together = f"for the batch of {len(rows)} request(s)"
    for _attempt in range(5):
        occupier = server.grpc()
        packed = pack_images([samples["bus.jpg"]] * 32)
        tensor = grpcclient.InferInput(c.INPUT_IMAGES, list(packed.shape), "UINT8")
        tensor.set_data_from_numpy(packed)
        done: queue.Queue = queue.Queue()
        occupier.async_infer(LEAF, [tensor], lambda result, error: done.put(error), client_timeout=300)
        time.sleep(0.05)
        results = burst(server, LEAF, rows, outputs=[c.LETTERBOX_TRANSFORM])
        assert done.get(timeout=300) is None, "the large good request must succeed"
        occupier.close()
        if all(isinstance(r, InferenceServerException) and together in r.message() for r in results):
            break
    else:
        raise AssertionError(f"5 bursts of {len(rows)} requests never ran as one batch of {LEAF}: "
                             f"{[getattr(r, 'message', lambda: 'answered')() for r in results]}")
    for result in results:
        assert result.status() == "StatusCode.UNKNOWN" and "DALI pipeline failed" in result.message(), result
    # As the backend does, the pipeline serves the next batch.
    (good,) = burst(server, LEAF, [samples["bus.jpg"]], outputs=[c.LETTERBOX_TRANSFORM])
    assert not isinstance(good, Exception), good
    assert good.as_numpy(c.LETTERBOX_TRANSFORM).shape == (1, len(c.TRANSFORM_FIELDS))


def test_what_the_header_check_refuses_never_reaches_the_dali_leaf(server, samples):
    damaged = set(damaged_scans(samples["bus.jpg"]))
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
