"""Streams of frames keep their own Ultralytics tracker: identities as the tracker gives them, a fresh tracker at
START, freed at END and when idle, and a refused frame leaves the stream as it was."""

from __future__ import annotations

import numpy as np
import pytest

from python_models.runtime import tracking
from python_models.runtime.tracking import NO_TRACK, Detections, SequenceLost, Streams, new_tracker, tracker_settings
from python_models.runtime.tracking import update


def moving_objects(frames: int, objects: int = 3, seed: int = 0) -> list[Detections]:
    """Boxes moving in straight lines, one per object, in a shuffled order every frame (as a detector answers)."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(50, 400, (objects, 2))
    speed = rng.uniform(-6, 6, (objects, 2))
    size = rng.uniform(40, 90, (objects, 2))
    out = []
    for t in range(frames):
        centre = start + speed * t
        xyxy = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        order = rng.permutation(objects)
        out.append(Detections(xyxy[order], np.full(objects, 0.9), np.arange(objects)[order] % 2))
    return out


def alone(frames: list[Detections], name: str = "bytetrack") -> list[np.ndarray]:
    tracker = new_tracker(tracker_settings(name))
    return [update(tracker, frame) for frame in frames]


def test_each_detection_gets_the_id_of_the_track_that_holds_it():
    frames = moving_objects(12)
    ids = alone(frames)
    assert (ids[0] > 0).all()  # the first frame confirms its tracks at once
    assert all(set(map(int, frame_ids)) == {1, 2, 3} for frame_ids in ids)
    # the ID rides with its box, not its row: rows come in another order every frame
    tracker = new_tracker(tracker_settings("bytetrack"))
    for frame, frame_ids in zip(frames, ids):
        for row in tracker.update(frame, None):
            assert frame_ids[int(row[-1])] == int(row[4])
    centres = [dict(zip(map(int, frame_ids), frame.xywh[:, 0])) for frame, frame_ids in zip(frames, ids)]
    steps = {k: np.diff([c[k] for c in centres]) for k in (1, 2, 3)}
    assert all(np.allclose(step, step[0], atol=1e-3) for step in steps.values())  # each ID follows one straight line


@pytest.mark.parametrize("name", ["bytetrack", "botsort"])
def test_both_trackers_follow_the_objects(name):
    ids = alone(moving_objects(10), name)
    assert all(set(map(int, frame)) == {1, 2, 3} for frame in ids)


def test_a_new_object_has_no_id_on_its_first_frame_and_low_scores_start_no_track():
    frames = moving_objects(6, objects=2)
    late = Detections(np.array([[500, 500, 560, 560]]), np.array([0.9]), np.array([0]))
    faint = Detections(np.array([[700, 100, 760, 160]]), np.array([0.15]), np.array([0]))
    joined = [frames[0], *[Detections(np.concatenate([f.xyxy, late.xyxy, faint.xyxy]),
                                      np.concatenate([f.conf, late.conf, faint.conf]),
                                      np.concatenate([f.cls, late.cls, faint.cls])) for f in frames[1:]]]
    ids = alone(joined)
    assert ids[1][2] == NO_TRACK and ids[2][2] > 0  # confirmed on its second frame
    assert all(frame[3] == NO_TRACK for frame in ids[1:])  # below new_track_thresh: never a track


def play(streams: Streams, plan: list[tuple[str, int, bool, bool]], clips: dict[str, list[Detections]]) -> dict:
    """Frames of several streams interleaved (stream, frame index, start, end): each stream's IDs, in order."""
    got: dict[str, list] = {}
    for t, (stream, index, start, end) in enumerate(plan):
        got.setdefault(stream, []).append(streams.frame(stream, clips[stream][index], float(t), start, end))
    return got


def interleaved(clips: dict[str, list[Detections]]) -> list[tuple[str, int, bool, bool]]:
    length = len(next(iter(clips.values())))
    return [(name, i, i == 0, i == length - 1) for i in range(length) for name in clips]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_interleaved_streams_each_get_their_solo_answer_and_a_shared_tracker_is_caught(monkeypatch):
    clips = {f"cam{k}": moving_objects(8, seed=k) for k in range(4)}
    solo = {name: alone(frames) for name, frames in clips.items()}
    streams = Streams(tracker_settings("bytetrack"), idle_s=60)
    got = play(streams, interleaved(clips), clips)
    assert all(same(got[name], solo[name]) for name in clips)
    assert len(streams) == 0  # every stream ended
    # planted bug: one tracker for every stream
    shared = new_tracker(tracker_settings("bytetrack"))
    monkeypatch.setattr(tracking, "new_tracker", lambda settings: shared)
    got = play(Streams(tracker_settings("bytetrack"), idle_s=60), interleaved(clips), clips)
    assert not all(same(got[name], solo[name]) for name in clips)


def test_start_begins_a_stream_afresh_and_ignoring_it_is_caught(monkeypatch):
    frames = moving_objects(6)
    other = moving_objects(6, seed=9)
    streams = Streams(tracker_settings("bytetrack"), idle_s=60)
    for t, frame in enumerate(frames):
        streams.frame("cam", frame, t, start=t == 0)
    restarted = [streams.frame("cam", frame, 10 + t, start=t == 0) for t, frame in enumerate(other)]
    assert same(restarted, alone(other))  # identities from 1 again, not 4
    # planted bug: START does not reset
    monkeypatch.setattr(Streams, "frame", lambda self, sid, det, now, start=False, end=False: update(
        (self.streams.setdefault(sid, tracking.Stream(new_tracker(self.settings), now))).tracker, det))
    streams = Streams(tracker_settings("bytetrack"), idle_s=60)
    for t, frame in enumerate(frames):
        streams.frame("cam", frame, t, start=t == 0)
    assert not same([streams.frame("cam", frame, 10 + t, start=t == 0) for t, frame in enumerate(other)], alone(other))


def test_an_idle_stream_is_freed_and_an_ended_one_at_once():
    streams = Streams(tracker_settings("bytetrack"), idle_s=5)
    frame = moving_objects(1)[0]
    streams.frame("a", frame, 0.0, start=True)
    streams.frame("b", frame, 3.0, start=True)
    streams.frame("c", frame, 3.0, start=True, end=True)
    assert "c" not in streams and len(streams) == 2
    assert streams.free_idle(6.0) == ["a"] and "b" in streams
    assert streams.free_idle(8.1) == ["b"] and len(streams) == 0


def test_a_refused_frame_leaves_the_stream_as_it_was():
    frames = moving_objects(8)
    streams = Streams(tracker_settings("bytetrack"), idle_s=60)
    got = []
    for t, frame in enumerate(frames):
        if t == 4:
            streams.touch("cam", float(t))  # the detector refused this frame
            continue
        got.append(streams.frame("cam", frame, float(t), start=t == 0))
    expected = alone(frames[:4] + frames[5:])
    assert same(got, expected)


def test_trackers_are_ultralytics_defaults_and_botsort_runs_without_the_frame():
    assert tracker_settings("bytetrack").track_buffer == 30
    settings = tracker_settings("botsort")
    assert settings.gmc_method == "none" and settings.with_reid is False
    with pytest.raises(ValueError, match="tracker must be one of"):
        tracker_settings("sort")


def churn(frames: int, seed: int = 1) -> list[Detections]:
    """A busy scene: an object enters every frame and each leaves 20 frames later, so tracks are born, lost and
    removed every frame: what makes a tracker's lists grow."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(frames):
        born = np.arange(max(0, t - 19), t + 1)  # the objects alive at t
        x = (born * 37) % 1800 + (t - born) * 4.0
        y = (born * 53) % 1000 + rng.normal(0, 0.5, len(born))
        out.append(Detections(np.stack([x, y, x + 30, y + 30], axis=1), np.full(len(born), 0.9), np.zeros(len(born))))
    return out


def test_a_stream_s_state_stays_bounded():
    streams = Streams(tracker_settings("bytetrack"), idle_s=5)
    for t, frame in enumerate(churn(1100)):
        streams.frame("busy", frame, t / 30, start=t == 0)
    tracker = streams.streams["busy"].tracker
    # 1,100 tracks were born: the tracker keeps its last 1,000 removed ones (Ultralytics' removed_buffer) and its lost
    # ones for track_buffer frames, so a stream's state stops growing (about 18 MB at most, measured with tracemalloc)
    assert len(tracker.removed_stracks) == 1000
    assert len(tracker.lost_stracks) <= tracker.max_frames_lost + 1 and len(tracker.tracked_stracks) <= 21


@pytest.mark.parametrize("leak", [False, True])
def test_an_idle_stream_gives_its_memory_back(leak, monkeypatch):
    import gc
    import tracemalloc

    frames = churn(150)
    streams = Streams(tracker_settings("bytetrack"), idle_s=5)
    if leak:  # planted bug: a freed stream's tracker is still referenced somewhere
        kept, free = [], Streams.free_idle
        monkeypatch.setattr(Streams, "free_idle", lambda self, now: (kept.extend(self.streams.values()),
                                                                     free(self, now))[1])
    streams.frame("warm-up", frames[0], 0.0, start=True, end=True)  # the trackers' modules, imported once
    tracemalloc.start()
    try:
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        for t, frame in enumerate(frames):
            streams.frame("busy", frame, t / 30, start=t == 0)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline
        assert streams.free_idle(150 / 30 + 6) == ["busy"] and len(streams) == 0
        gc.collect()
        freed = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert held > 1_000_000
    assert (freed < held / 20) is not leak, (held, freed)


def test_a_frame_of_a_stream_this_instance_let_go_is_refused_never_given_fresh_ids(monkeypatch):
    """Triton stamps a frame's arrival, the model its execution: a frame that arrived before Triton's idle deadline
    and ran after the model's finds no tracker. It must be refused (the client restarts the stream and marks it),
    not tracked afresh with IDs from 1 that collide with the stream's earlier ones."""
    frames = moving_objects(6)
    streams = Streams(tracker_settings("bytetrack"), idle_s=3.0)
    first = [streams.frame("cam", frame, float(t), start=t == 0) for t, frame in enumerate(frames[:3])]
    assert same(first, alone(frames[:3]))
    assert streams.free_idle(6.0) == ["cam"]  # idle past the model's deadline; Triton still held the stream
    with pytest.raises(SequenceLost):
        streams.frame("cam", frames[3], 6.5)
    streams.touch("cam", 6.6)  # a refused image of the lost stream does not bring it back either
    assert "cam" not in streams
    restarted = streams.frame("cam", frames[3], 7.0, start=True)  # the client starts it again: IDs from 1, said so
    assert same([restarted], alone(frames[3:4]))
    # planted bug: a frame without START of a stream not held gets a fresh tracker (the code before this check)
    monkeypatch.setattr(Streams, "_stream", lambda self, sid, now, start: self.streams.setdefault(
        sid, tracking.Stream(new_tracker(self.settings), now)) if not start else self.streams.__setitem__(
        sid, tracking.Stream(new_tracker(self.settings), now)) or self.streams[sid])
    streams = Streams(tracker_settings("bytetrack"), idle_s=3.0)
    for t, frame in enumerate(frames[:3]):
        streams.frame("cam", frame, float(t), start=t == 0)
    streams.free_idle(6.0)
    silently = streams.frame("cam", frames[3], 6.5)
    assert set(silently[silently > 0]) <= {1, 2, 3}, "the planted bug restarts the stream's IDs without a word"


def test_the_refusal_uses_tritons_words_so_clients_restart_the_stream(monkeypatch):
    import importlib
    import sys
    import types
    from types import SimpleNamespace

    from python_models.client.streams import sequence_lost

    # outside a stub: the module only needs the name at import
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    for name in ("python_models.runtime.triton.track_model", "python_models.runtime.triton.adapter"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        TritonPythonModel = importlib.import_module("python_models.runtime.triton.track_model").TritonPythonModel
    finally:  # bound to the stand-in: never left for another test
        for name in ("python_models.runtime.triton.track_model", "python_models.runtime.triton.adapter"):
            sys.modules.pop(name, None)

    message = TritonPythonModel.lost_message(SimpleNamespace(name="yolo11_track", streams=SimpleNamespace(idle_s=11.0)),
                                             42)
    assert message.startswith("inference request for sequence 42 to model 'yolo11_track' must specify the START flag")
    assert sequence_lost(Exception(message))
