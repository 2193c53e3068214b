"""What people really send, against the real server: phone photos stored sideways with an EXIF orientation tag, and
damaged JPEGs and PNGs. Every public model answers a rotated photo as Track A does, in the upright frame the user
sees, and a damaged image fails its own request only, whatever batch it lands in, without changing any other
answer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_same_detections, burst, detections_of, reference_detections, tolerance
from tritonclient.utils import InferenceServerException

from python_models import contract as c
from python_models.export import repository as repo
from python_models.client import contract_violations, infer_grpc, unpack_detections
from python_models.client.bad_inputs import EXIF_ORIENTATIONS, damaged_but_decodable, damaged_scans, decoder_only_damage
from python_models.client.bad_inputs import exif_rotated
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


@pytest.fixture(scope="module")
def solo(server, samples) -> dict[str, dict]:
    """Each public model's answer to bus.jpg sent alone: what it must answer in any burst."""
    client = server.grpc()
    return {model: infer_grpc(client, model, [samples["bus.jpg"]]) for model in PUBLIC}


def same_answer(outputs: dict, alone: dict) -> bool:
    """Equal, not within a tolerance: the CPU twins are deterministic whatever batch a row lands in."""
    return all(np.array_equal(outputs[name], alone[name]) for name in PUBLIC_OUTPUT_NAMES)


def test_an_answer_decoded_on_the_cpu_differs_from_track_d_s_so_equality_tells_which_decoder_answered(solo):
    """Before the guard sent a failed batch to DALI again, it decoded every row of it on the CPU (OpenCV's
    letterbox): Track C's preprocessing in front of the same engine. That answer differs from Track D's own, so the
    burst test below, which asks for equality, fires on that fallback."""
    cpu_decoded = solo[repo.END2END_ENSEMBLE]
    for tier in c.DALI_TIERS:
        assert not same_answer(cpu_decoded, solo[c.dali_ensemble_name(tier)]), tier.name


@pytest.mark.parametrize("model", PUBLIC)
def test_damaged_images_fail_alone_and_fifteen_good_requests_get_their_solo_answers(server, samples, solo, model):
    """Every kind of damaged image (scan headers a decoder cannot use, and damage only decoding finds), interleaved
    with 15 good requests in one burst: each damaged one INVALID_ARGUMENT, each good one exactly its answer alone. On
    Track D the decoder-only damage reaches DALI and fails the batch that holds it (as the DALI backend does): the guard
    sends the batch again in halves, so the good rows get DALI's answer, and only the damaged rows are tried on the
    CPU (and refused there too)."""
    damaged = {**damaged_scans(samples["bus.jpg"]), **decoder_only_damage(samples["bus.jpg"], samples["zidane_640x480.png"])}
    rows = [samples["bus.jpg"]] * 15
    for index, data in enumerate(damaged.values()):
        rows.insert(2 * index + 1, data)
    before = scrape(server.metrics_url, [c.DALI_CPU_FALLBACK_METRIC])
    results = burst(server, model, rows)
    after = scrape(server.metrics_url, [c.DALI_CPU_FALLBACK_METRIC])
    kinds = {data: kind for kind, data in damaged.items()}
    for data, result in zip(rows, results):
        if data in kinds:
            assert isinstance(result, InferenceServerException), f"{model}: {kinds[data]} got detections"
            assert result.status() == "StatusCode.INVALID_ARGUMENT", (model, result.status(), result.message())
            assert "corrupt" in result.message(), (model, kinds[data], result.message())
        else:
            assert not isinstance(result, Exception), f"{model}: a good request next to damaged ones failed: {result}"
            outputs = {name: result.as_numpy(name) for name in PUBLIC_OUTPUT_NAMES}
            assert same_answer(outputs, solo[model]), f"{model}: a good request's answer changed next to damaged ones"
    tier = next((t for t in c.DALI_TIERS if c.dali_ensemble_name(t) == model), None)
    if tier is not None:
        # Only the decoder-only damage reached DALI; those rows, and no good one, were tried on the CPU.
        key = (c.DALI_CPU_FALLBACK_METRIC, c.dali_guard_name(tier))
        only_decoders = len(decoder_only_damage(samples["bus.jpg"], samples["zidane_640x480.png"]))
        assert after.get(key, 0.0) - before.get(key, 0.0) == only_decoders, f"{model}: rows decoded on the CPU"


@pytest.mark.parametrize("model", PUBLIC)
def test_damage_a_decoder_reads_through_is_answered_and_harms_no_batch_mate(server, samples, model):
    """Damage decoders read through (libjpeg reads through a marker or flipped bits inside the scan, which nvJPEG may
    refuse): each is answered within the contract or refused alone, never with a server error, and its batch-mates
    get their own answers."""
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

