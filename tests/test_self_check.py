"""The self-check's own judgement, without a server: it holds each track to Track A as the served config says
Track A runs (precision, and where it decodes), and it sizes perf_analyzer's windows from the server's latency."""

from __future__ import annotations

from python_models import contract as c
from python_models.client.matching import TOLERANCES, tolerance
from python_models.client.server_check import perf_window_ms, served_choices


def track_a_config(kind: str, **parameters: str) -> dict:
    return {"name": c.PYTORCH, "instance_group": [{"kind": kind, "count": 4}],
            "parameters": {name: {"string_value": value} for name, value in parameters.items()}}


def test_the_check_reads_how_track_a_is_served():
    gpu = track_a_config("KIND_GPU", precision="fp16", decode="gpu")
    assert served_choices(gpu) == ("fp16", "gpu")
    assert served_choices(track_a_config("KIND_GPU", precision="fp32", decode="cpu")) == ("fp32", "cpu")
    # Track A's own fallbacks where the config states nothing, not the check's guesses.
    assert served_choices(track_a_config("KIND_GPU")) == (c.TRACK_A_UNSTATED["precision"], c.TRACK_A_UNSTATED["decode"])
    # The CPU profile serves its twin on the CPU whatever the parameters say: FP32, OpenCV.
    assert served_choices(track_a_config("KIND_CPU", precision="fp16", decode="gpu")) == ("fp32", "cpu")
    assert served_choices({}) == ("fp32", "cpu"), "Track A absent"
    assert served_choices(gpu, precision="fp32", decode="cpu") == ("fp32", "cpu"), "the command line decides"


def test_nvjpeg_decoding_widens_what_every_track_is_held_to():
    """Track A decoding with nvJPEG sees other pixels than tracks B and C's OpenCV: each is held to it within a
    decoder difference (Track D's tolerance), and Track A to the predictor likewise."""
    for precision in TOLERANCES:
        decoder = TOLERANCES[precision]["dali"]
        for model in c.PUBLIC_MODELS:
            own, gpu = tolerance(model, precision), tolerance(model, precision, decode="gpu")
            if model == c.PYTORCH:
                assert gpu == own, "Track A against itself decodes the same way"
                continue
            assert gpu.min_iou <= min(own.min_iou, decoder.min_iou) and gpu.score >= max(own.score, decoder.score)
            assert gpu.unpaired >= max(own.unpaired, decoder.unpaired)
        assert tolerance(c.PYTORCH, precision, against="predictor", decode="gpu").score >= 0.025, \
            "measured: nvJPEG moves the predictor's scores by up to 0.025 (H100/H200)"
    assert tolerance(c.TRT_ENSEMBLE, "fp32", decode="gpu") != tolerance(c.TRT_ENSEMBLE, "fp32"), "the check can fire"


def test_perf_windows_grow_with_the_servers_latency():
    assert perf_window_ms(2000, 16, 0.005) == 2000, "a GPU host: the floor"
    slow = perf_window_ms(2000, 16, 0.15)  # this 2-core CPU profile: 150 ms a request
    assert slow > 16 * 150 * 2, "the window must hold requests that start and end in it at concurrency 16"
    assert perf_window_ms(2000, 1, 0.15) == 2000
