"""The tracking model on the real CPU-profile server: a stream's frames get the detection track's answer unchanged
plus the IDs Ultralytics' tracker gives those detections; streams sent at once do not mix; START begins afresh; a
bad frame is refused alone and the stream goes on."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException
from ultralytics.utils import ASSETS

from python_models.client import infer_grpc
from python_models.client.streams import frame_track_ids, send_frame
from python_models.contract import OUTPUT_BOXES, OUTPUT_CLASSES, OUTPUT_NUM_DETECTIONS, OUTPUT_SCORES, PUBLIC_OUTPUT_NAMES
from python_models.contract import END2END_ENSEMBLE, TRACK
from python_models.export.repository import FASTEST_DETECTOR
from python_models.runtime.tracking import Detections, new_tracker, tracker_settings


def clip(path: str, frames: int, step: tuple[int, int], size: int = 480) -> list[bytes]:
    """A camera panning over a photo: a window of ``size`` pixels moving ``step`` pixels a frame, as JPEGs."""
    image = cv2.imread(str(ASSETS / path))
    out = []
    for t in range(frames):
        x, y = step[0] * t, step[1] * t
        out.append(cv2.imencode(".jpg", image[y : y + size, x : x + size], [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
    return out


def play(server, stream_id, frames: list[bytes], restart_at: int | None = None) -> list[dict]:
    client = server.grpc()
    try:
        return [send_frame(client, stream_id, frame, start=t in (0, restart_at), end=t == len(frames) - 1, timeout=300)
                for t, frame in enumerate(frames)]
    finally:
        client.close()


def expected_ids(answers: list[dict]) -> list[np.ndarray]:
    """What Ultralytics' tracker, fresh for the stream, gives the served detections."""
    tracker = new_tracker(tracker_settings("bytetrack"))
    ids = []
    for outputs in answers:
        n = int(outputs[OUTPUT_NUM_DETECTIONS][0, 0])
        rows = tracker.update(Detections(outputs[OUTPUT_BOXES][0, :n], outputs[OUTPUT_SCORES][0, :n],
                                         outputs[OUTPUT_CLASSES][0, :n]), None)
        frame_ids = np.full(n, -1, np.int32)
        for row in rows:  # x1, y1, x2, y2, track ID, score, class, index of the detection it matched
            frame_ids[int(row[7])] = int(row[4])
        ids.append(frame_ids)
    return ids


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


BUS = clip("bus.jpg", 8, (3, 4))


@pytest.fixture(scope="module")
def bus_stream(server) -> list[dict]:
    return play(server, 1001, BUS)


def detector(server) -> str:
    return server.grpc().get_model_config(TRACK).config.parameters["detector"].string_value


def test_a_stream_gets_the_detection_track_s_answer_and_the_ids_its_tracker_gives_them(server, bus_stream):
    client = server.grpc()
    for frame, outputs in zip(BUS, bus_stream):
        alone = infer_grpc(client, detector(server), [frame], timeout=300)
        for name in PUBLIC_OUTPUT_NAMES:
            np.testing.assert_allclose(outputs[name], alone[name], atol=1e-4, err_msg=name)
    client.close()
    served = [frame_track_ids(outputs) for outputs in bus_stream]
    assert same(served, expected_ids(bus_stream))
    # not zero boxes against zero boxes: objects are followed over the whole clip
    assert min(len(ids) for ids in served) > 3
    lasting = set(map(int, served[0])) & set(map(int, served[-1])) - {-1}
    assert lasting, served


def test_streams_sent_at_once_each_get_their_solo_answer(server, bus_stream):
    clips = {2001: BUS, 2002: clip("bus.jpg", 8, (40, 10)), 2003: clip("zidane.jpg", 8, (60, 20)),
             2004: list(reversed(BUS))}
    got: dict[int, list] = {}
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, play(server, k, clips[k]))) for k in clips]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for k in clips:
        assert same([frame_track_ids(o) for o in got[k]], expected_ids(got[k])), k
    # the bus clip sent beside three others answers what it answered alone
    assert same([frame_track_ids(o) for o in got[2001]], [frame_track_ids(o) for o in bus_stream])


def test_start_again_begins_the_stream_with_fresh_ids(server, bus_stream):
    again = play(server, 3001, BUS[:4] + BUS, restart_at=4)
    assert same([frame_track_ids(o) for o in again[4:]], [frame_track_ids(o) for o in bus_stream])


def test_a_bad_frame_is_refused_alone_and_the_stream_goes_on(server, bus_stream):
    client = server.grpc()
    answers = []
    for t, frame in enumerate(BUS):
        if t == 3:
            with pytest.raises(InferenceServerException, match="not a JPEG or PNG") as refused:
                send_frame(client, 4001, b"\x00garbage" * 50, timeout=300)
            assert "INVALID_ARGUMENT" in str(refused.value.status())
        answers.append(send_frame(client, 4001, frame, start=t == 0, end=t == len(BUS) - 1, timeout=300))
    client.close()
    assert same([frame_track_ids(o) for o in answers], [frame_track_ids(o) for o in bus_stream])


def test_a_frame_outside_a_sequence_is_refused_with_the_reason(server):
    client = server.grpc()
    with pytest.raises(InferenceServerException, match="correlation ID"):
        infer_grpc(client, TRACK, [BUS[0]], timeout=60)
    with pytest.raises(InferenceServerException, match="START"):
        send_frame(client, 5001, BUS[0], timeout=60)  # no START: Triton holds no such stream
    client.close()


def test_the_tracking_model_runs_triton_s_sequence_batcher_over_the_fastest_detection_track_here(server):
    config = server.grpc().get_model_config(TRACK).config
    batcher = config.sequence_batching
    assert batcher.HasField("oldest") and batcher.max_sequence_idle_microseconds > 0
    assert config.input[0].allow_ragged_batch, "frames of different lengths batch together"
    # export --track-detector auto: on the CPU profile, Track C (its twin), the fastest measured here
    assert detector(server) == FASTEST_DETECTOR["cpu"] == END2END_ENSEMBLE


def test_bench_streams_paces_each_camera_and_reports_every_level(server, tmp_path):
    """yolo11-triton bench streams against the session server: two cameras at 4 fps get at most 4 frames a second each
    (a sender that did not wait for the camera would get more), every frame sent is answered, and the report says
    which detection track the tracking model called."""
    out = tmp_path / "streams"
    result = subprocess.run([sys.executable, "-m", "python_models", "bench", "streams", "--grpc-url", server.grpc_url,
                             "--metrics-url", server.metrics_url.removesuffix("/metrics"), "--streams", "2", "--fps",
                             "4", "--seconds", "3", "--frame-size", "320x240", "--warm-up-seconds", "0", "--out",
                             str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (level,) = json.loads((out / "report.json").read_text())["levels"]
    assert level["streams"] == 2 and level["errors"] == 0 and level["detector"] == detector(server), level
    assert 0 < level["slowest_stream_frames_per_s"] <= level["frames_per_s_per_stream"] <= 4.0, level
    assert level["tracking_batch"] >= 1 and level["p50_ms"] > 0, level
    assert "| 2 | 4 |" in (out / "report.md").read_text()
