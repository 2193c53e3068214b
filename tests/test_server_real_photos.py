"""What people really send, against the real server: phone photos stored sideways with an EXIF orientation tag, and
JPEGs whose scan is damaged behind intact headers. Every public model answers a rotated photo as Track A does, in
the upright frame the user sees, and a damaged scan fails its own request only, whatever batch it lands in."""

from __future__ import annotations

import pytest
from conftest import assert_same_detections, burst, detections_of, reference_detections, tolerance
from tritonclient.utils import InferenceServerException

from python_models import contract as c
from python_models.export import repository as repo
from python_models.client import contract_violations, infer_grpc, unpack_detections
from python_models.client.bad_inputs import EXIF_ORIENTATIONS, damaged_but_decodable, damaged_scans, exif_rotated
from python_models.client.metrics import scrape
from python_models.contract import PUBLIC_OUTPUT_NAMES

PUBLIC = repo.PUBLIC_MODELS


@pytest.fixture(scope="module")
def rotated(samples) -> dict[int, bytes]:
    """bus.jpg as a phone would store it with each EXIF orientation (portrait photos: 6 and 8)."""
    return {k: exif_rotated(samples["bus.jpg"], k) for k in EXIF_ORIENTATIONS}


@pytest.fixture(scope="module")
def track_a_on_rotated(server, rotated) -> dict:
    client = server.grpc()
    return {k: unpack_detections(infer_grpc(client, repo.PYTORCH, [data]))[0] for k, data in rotated.items()}


def test_track_a_answers_rotated_photos_in_the_upright_frame_as_the_predictor_does(
        rotated, track_a_on_rotated, reference_model, tmp_path):
    """The reference every other track is held to: the Ultralytics predictor reads the file with cv2.imread, which
    applies the tag, and answers in the upright image's pixels."""
    for orientation, data in rotated.items():
        path = tmp_path / f"bus_exif_{orientation}.jpg"
        path.write_bytes(data)
        reference = reference_detections(reference_model, path)
        assert_same_detections(track_a_on_rotated[orientation], reference, *tolerance(repo.PYTORCH, against="predictor"),
                               f"Track A, EXIF orientation {orientation}")


@pytest.mark.parametrize("model", [m for m in PUBLIC if m != repo.PYTORCH])
def test_every_track_answers_rotated_photos_as_track_a(server, rotated, track_a_on_rotated, model):
    client = server.grpc()
    upright = (810, 1080)  # bus.jpg's width x height as the user sees it, whatever the stored orientation
    for orientation, data in rotated.items():
        outputs = infer_grpc(client, model, [data])
        assert contract_violations(outputs, [upright], server.spec) == [], (model, orientation)
        assert_same_detections(unpack_detections(outputs)[0], track_a_on_rotated[orientation], *tolerance(model),
                               f"{model}, EXIF orientation {orientation}")


@pytest.mark.parametrize("model", PUBLIC)
def test_damaged_scans_fail_alone_while_fifteen_good_requests_are_in_flight(server, samples, model):
    """Every kind of undecodable scan behind intact headers, interleaved with 15 good requests in one burst: the good
    ones get their own answers, each damaged one INVALID_ARGUMENT. On Track D the damaged ones share DALI batches
    with good ones (the twin fails such a batch whole, as the DALI backend does) and the guard answers those on the
    CPU."""
    reference = unpack_detections(infer_grpc(server.grpc(), repo.PYTORCH, [samples["bus.jpg"]]))[0]
    damaged = list(damaged_scans(samples["bus.jpg"]).values())
    rows = [samples["bus.jpg"]] * 15
    for index, data in enumerate(damaged):
        rows.insert(3 * index + 1, data)
    before = scrape(server.metrics_url, [c.DALI_CPU_FALLBACK_METRIC])
    results = burst(server, model, rows)
    after = scrape(server.metrics_url, [c.DALI_CPU_FALLBACK_METRIC])
    for data, result in zip(rows, results):
        if data in damaged:
            assert isinstance(result, InferenceServerException), f"{model}: a damaged scan got detections"
            assert result.status() == "StatusCode.INVALID_ARGUMENT", (model, result.status(), result.message())
            assert "corrupt JPEG" in result.message(), (model, result.message())
        else:
            assert not isinstance(result, Exception), f"{model}: a good request next to damaged scans failed: {result}"
            assert_same_detections(detections_of(result), reference, *tolerance(model), f"{model}: good request")
    tier = next((t for t in c.DALI_TIERS if c.dali_ensemble_name(t) == model), None)
    if tier is not None:
        # The damaged scans reached DALI (no header check caught them): the batches it failed were decoded on the CPU.
        guard = c.dali_guard_name(tier)
        key = (c.DALI_CPU_FALLBACK_METRIC, guard)
        assert after.get(key, 0.0) - before.get(key, 0.0) >= len(damaged), f"{guard} decoded nothing on the CPU"


@pytest.mark.parametrize("model", PUBLIC)
def test_damage_a_decoder_reads_through_is_answered_and_harms_no_batch_mate(server, samples, model):
    """Damage decoders disagree on (libjpeg refuses a scan header of the wrong length that DALI's GPU decoder reads;
    it reads through a marker or flipped bits inside the scan that nvJPEG may refuse): each is answered within the
    contract or refused alone, never with a server error, and its batch-mates get their own answers."""
    reference = unpack_detections(infer_grpc(server.grpc(), repo.PYTORCH, [samples["bus.jpg"]]))[0]
    damaged = list(damaged_but_decodable(samples["bus.jpg"]).values())
    rows = [samples["bus.jpg"]]
    for data in damaged:
        rows += [data, samples["bus.jpg"]]
    for data, result in zip(rows, burst(server, model, rows)):
        if data in damaged:
            if isinstance(result, InferenceServerException):
                assert result.status() == "StatusCode.INVALID_ARGUMENT", (model, result.status(), result.message())
            else:
                outputs = {name: result.as_numpy(name) for name in PUBLIC_OUTPUT_NAMES}
                assert contract_violations(outputs, [(810, 1080)], server.spec) == [], model
        else:
            assert not isinstance(result, Exception), f"{model}: a good request next to a damaged one failed: {result}"
            assert_same_detections(detections_of(result), reference, *tolerance(model), f"{model}: good request")

