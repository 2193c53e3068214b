"""Objects followed from frame to frame: one Ultralytics tracker per video stream, fed a detection track's answers.

The trackers are Ultralytics' own (``ultralytics.trackers``: ByteTrack, or BoT-SORT without ReID), with their YAML
defaults, so the identities match ``model.track`` fed the same detections. BoT-SORT runs without global motion
compensation (``gmc_method: none``): that needs the decoded frame, which the tracking step never sees.

``Streams`` holds the trackers of every stream one Triton instance serves, keyed by the sequence's correlation ID:
a START begins a fresh tracker (identities from 1 again), an END frees it, and a stream idle past the sequence
batcher's timeout is freed here too, because Triton frees its slot without telling the model. A frame without START
of a stream it does not hold (freed here, though Triton still held it: the frame arrived before Triton's deadline
and ran after this one) is refused with ``SequenceLost``, never given a fresh tracker: its identities would start
from 1 again and collide with the ones the stream already used, and the client would not know.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from python_models.contract import TRACKERS

NO_TRACK = -1
"""The track ID of a detection no confirmed track holds (a new object's first frame, a low-score box unmatched)."""


def tracker_settings(name: str):
    """Ultralytics' YAML defaults for tracker ``name`` (``contract.TRACKERS``), as ``model.track`` loads them."""
    import ultralytics
    from ultralytics.utils import YAML, IterableSimpleNamespace

    if name not in TRACKERS:
        raise ValueError(f"tracker must be one of {TRACKERS}, not {name!r}")
    settings = YAML.load(Path(ultralytics.__file__).parent / "cfg" / "trackers" / f"{name}.yaml")
    if name == "botsort":
        settings.update(gmc_method="none", with_reid=False)
    return IterableSimpleNamespace(**settings)


def new_tracker(settings):
    """A tracker as ``model.track`` makes one per stream (``ultralytics.trackers.track``)."""
    from ultralytics.trackers.track import TRACKER_MAP

    return TRACKER_MAP[settings.tracker_type](args=settings)


class Detections:
    """One frame's detections as the trackers read them (Ultralytics' ``Boxes`` on the CPU): xyxy in the
    original image's pixels, scores, classes."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        self.conf = np.asarray(conf, np.float32).reshape(-1)
        self.cls = np.asarray(cls, np.float32).reshape(-1)

    @property
    def xywh(self) -> np.ndarray:
        x1, y1, x2, y2 = self.xyxy.T
        return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index) -> "Detections":
        return Detections(self.xyxy[index], self.conf[index], self.cls[index])


def update(tracker, detections: Detections) -> np.ndarray:
    """Feed one frame to ``tracker``; the track ID of each detection, in the detections' order (``NO_TRACK`` for
    none). The tracker's rows end with the index of the detection each track matched this frame."""
    ids = np.full(len(detections), NO_TRACK, np.int32)
    rows = tracker.update(detections, None)
    if len(rows):
        ids[rows[:, -1].astype(int)] = rows[:, 4].astype(np.int32)
    return ids


class SequenceLost(KeyError):
    """A frame without START of a stream this instance does not hold."""


@dataclass
class Stream:
    tracker: object
    last_seen: float


class Streams:
    """The trackers of the streams one instance serves, by correlation ID."""

    def __init__(self, settings, idle_s: float) -> None:
        self.settings = settings
        self.idle_s = idle_s
        self.streams: dict[Hashable, Stream] = {}

    def __len__(self) -> int:
        return len(self.streams)

    def __contains__(self, stream_id: Hashable) -> bool:
        return stream_id in self.streams

    def objects(self) -> int:
        """Tracks held by every stream's tracker: followed, lost (kept ``track_buffer`` frames) and removed (the
        last 1,000 kept)."""
        return sum(len(s.tracker.tracked_stracks) + len(s.tracker.lost_stracks) + len(s.tracker.removed_stracks)
                   for s in self.streams.values())

    def free_idle(self, now: float) -> list[Hashable]:
        """Free the streams that sent nothing for longer than the idle timeout; their IDs."""
        idle = [key for key, stream in self.streams.items() if now - stream.last_seen > self.idle_s]
        for key in idle:
            del self.streams[key]
        return idle

    def _stream(self, stream_id: Hashable, now: float, start: bool) -> Stream:
        """The stream's state, fresh at a START; seen ``now``. ``SequenceLost`` for a frame without START of a
        stream this instance does not hold."""
        stream = self.streams.get(stream_id)
        if start:
            stream = self.streams[stream_id] = Stream(new_tracker(self.settings), now)
        elif stream is None:
            raise SequenceLost(stream_id)
        stream.last_seen = now
        return stream

    def frame(self, stream_id: Hashable, detections: Detections, now: float, start: bool = False,
              end: bool = False) -> np.ndarray:
        """The track IDs of one frame's detections in stream ``stream_id``: a START begins a fresh tracker, an END
        frees it after this frame; ``SequenceLost`` for a frame without START of a stream not held."""
        ids = update(self._stream(stream_id, now, start).tracker, detections)
        if end:
            del self.streams[stream_id]
        return ids

    def touch(self, stream_id: Hashable, now: float, start: bool = False, end: bool = False) -> None:
        """A frame that was not tracked (refused as a bad image): the stream's state stays as it was, but it is
        not idle, a START still begins it afresh and an END still frees it; a stream not held stays so."""
        if start or stream_id in self.streams:
            self._stream(stream_id, now, start)
        if end:
            self.streams.pop(stream_id, None)
