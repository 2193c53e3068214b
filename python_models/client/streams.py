"""A video stream as the tracking model (``contract.TRACK``) takes it: one Triton sequence per stream (its sequence
ID), the first frame flagged START and the last END, one frame per request, each sent after the previous one's
answer so that they arrive in order."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from python_models.contract import OUTPUT_NUM_DETECTIONS, OUTPUT_TRACK_IDS, PUBLIC_OUTPUT_NAMES, TRACK
from python_models.contract import ModelSpec

TRACK_OUTPUT_NAMES = (*PUBLIC_OUTPUT_NAMES, OUTPUT_TRACK_IDS)


def send_frame(client, stream_id: int | str, encoded: bytes, start: bool = False, end: bool = False,
               model: str = TRACK, timeout: float | None = None) -> dict[str, np.ndarray]:
    """One frame of stream ``stream_id`` (a non-zero integer or a non-empty string) through a ``tritonclient`` gRPC
    client: the tracking model's outputs by name (one row). Raises what the client raises for a refused frame."""
    from python_models.client import infer_grpc

    return infer_grpc(client, model, [encoded], timeout, TRACK_OUTPUT_NAMES, sequence_id=stream_id,
                      sequence_start=start, sequence_end=end)


SEQUENCE_LOST = "must specify the START flag"
"""Triton's words for a frame of a sequence it does not hold: the stream went idle past the timeout, or the tracking
model was reloaded (its stub died) and its streams with it."""
RESTART_WINDOW_S = 60.0
"""How long a stream keeps trying to start its sequence again after the server lost it (a reload takes seconds)."""


def sequence_lost(exc: Exception) -> bool:
    """Whether a refused frame was refused for its sequence, not for itself: Triton no longer holds the stream."""
    return SEQUENCE_LOST in str(exc)


def bad_frame(exc: Exception) -> bool:
    """Whether the frame itself was refused (not an image, damaged): the stream goes on with the next one."""
    from tritonclient.utils import InferenceServerException

    return (isinstance(exc, InferenceServerException) and "INVALID_ARGUMENT" in str(exc.status())
            and not sequence_lost(exc))


def frame_track_ids(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The track ID of each detection of a one-frame answer (the first ``num_detections``; -1 for none yet)."""
    count = int(outputs[OUTPUT_NUM_DETECTIONS].reshape(-1)[0])
    return outputs[OUTPUT_TRACK_IDS][0, :count]


LIVE_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def is_live(source: str) -> bool:
    """A camera (a device index) or a network stream: read as fast as it delivers, frames dropped when the server is
    slower. Anything else is a file, read frame by frame."""
    return source.isdigit() or source.lower().startswith(LIVE_PREFIXES)


def open_capture(source: str):
    """An OpenCV capture of ``source`` (a file, a URL OpenCV's FFmpeg opens, or a device index)."""
    import cv2

    capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not capture.isOpened():
        raise OSError(f"cannot open video source {source!r} (a file, rtsp:// or http:// URL, or a device index)")
    return capture


class LatestFrame:
    """A live source read on its own thread as fast as it delivers, keeping only the newest frame: a sender slower
    than the source skips frames instead of falling behind, and ``dropped`` counts them."""

    def __init__(self, capture) -> None:
        self.capture = capture
        self.condition = threading.Condition()
        self.frame = None
        self.index = -1
        self.taken = -1
        self.dropped = 0
        self.ended = False
        self.reader = threading.Thread(target=self._read, name="live source", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self.ended:
            ok, frame = self.capture.read()
            with self.condition:
                if not ok:
                    self.ended = True
                else:
                    if self.index > self.taken:
                        self.dropped += 1  # the previous frame was never sent
                    self.frame, self.index = frame, self.index + 1
                self.condition.notify_all()

    def take(self, timeout: float = 30.0):
        """The newest frame not yet taken, as ``(index, frame, last)``; None once the source has ended (or gave no
        frame for ``timeout`` seconds)."""
        with self.condition:
            if not self.condition.wait_for(lambda: self.index > self.taken or self.ended, timeout):
                return None
            if self.index <= self.taken:
                return None
            self.taken = self.index
            return self.index, self.frame, self.ended

    def close(self, timeout: float = 10.0) -> None:
        """Stop reading and release the source once the reader is out of OpenCV: releasing it under a read, or
        exiting with a thread inside one, aborts the process."""
        self.ended = True
        self.reader.join(timeout)
        if not self.reader.is_alive():
            self.capture.release()


def file_frames(capture):
    """Every frame of a file, in order, as ``(index, frame, last)`` (one frame read ahead to know the last)."""
    ok, frame = capture.read()
    index = 0
    while ok:
        ok, following = capture.read()
        yield index, frame, not ok
        frame, index = following, index + 1


@dataclass
class StreamSummary:
    source: str
    stream_id: int
    frames: int = 0
    refused: int = 0
    dropped: int = 0
    restarts: int = 0
    """Times the server lost the sequence (a reloaded model, an idle timeout) and it was started again: track IDs
    begin again from there."""
    ended: str = "end of stream"
    """How the sequence ended: end of stream, interrupted, or the reason the source or server failed."""


def frame_line(source: str, index: int, frame_shape, outputs: dict[str, np.ndarray], spec: ModelSpec) -> dict:
    """A frame's line: ``detect``'s line for a video frame (its key ``SOURCE#frame=000123``, size, detections), with
    the source, the frame's index and each detection's ``track_id``."""
    from python_models.client import unpack_detections
    from python_models.client.bulk import result_line, video_frame_key

    (detections,) = unpack_detections(outputs, spec)
    line = result_line(video_frame_key(source, index), detections, (int(frame_shape[1]), int(frame_shape[0])))
    for detection, track_id in zip(line["detections"], frame_track_ids(outputs).tolist()):
        detection["track_id"] = track_id
    return {"source": source, "frame": index, **line}


def draw(frame: np.ndarray, line: dict) -> np.ndarray:
    import cv2

    for det in line["detections"]:
        x1, y1, x2, y2 = (int(round(v)) for v in det["box"])
        colour = (0, 200, 0) if det["track_id"] >= 0 else (160, 160, 160)
        cv2.rectangle(frame, (x1, y1), (x2, y2), colour, 2)
        label = f"{det['track_id']} {det['class_name']}" if det["track_id"] >= 0 else det["class_name"]
        cv2.putText(frame, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return frame


def track_source(client, source: str, stream_id: int, write: Callable[[dict], None], stop: threading.Event,
                 spec: ModelSpec, video_path: Path | None = None, model: str = TRACK,
                 timeout: float = 300.0) -> StreamSummary:
    """Send one source's frames as one sequence, in order, writing a line per frame (its detections with track IDs,
    or the reason it was refused); END goes with the last frame, or with the next frame once ``stop`` is set."""
    import cv2
    from tritonclient.utils import InferenceServerException

    from python_models.client.bulk import VIDEO_JPEG_QUALITY

    summary = StreamSummary(source, stream_id)
    try:
        capture = open_capture(source)
    except OSError as exc:
        summary.ended = str(exc)
        return summary
    live = LatestFrame(capture) if is_live(source) else None
    frames = iter(lambda: live.take(), None) if live else file_frames(capture)
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    writer = None
    sent = None
    try:
        for index, frame, last in frames:
            end = last or stop.is_set()
            encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, VIDEO_JPEG_QUALITY])[1].tobytes()
            restarted = None
            try:
                try:
                    outputs = send_frame(client, stream_id, encoded, start=sent is None, end=end, model=model,
                                         timeout=timeout)
                except InferenceServerException as exc:
                    if bad_frame(exc) or sent is None:
                        raise
                    outputs, lost = resend(client, stream_id, encoded, end, model, timeout, sequence_lost(exc))
                    if lost:
                        summary.restarts += 1
                        restarted = exc.message() or str(exc)
            except InferenceServerException as exc:
                if not bad_frame(exc):
                    raise  # not this frame's fault, and the sequence could not be started again: the stream stops
                summary.refused += 1
                write({"source": source, "frame": index, "error": exc.message() or str(exc)})
            else:
                line = frame_line(source, index, frame.shape, outputs, spec)
                if restarted:
                    line["restarted"] = restarted  # track IDs begin again with this frame
                write(line)
                if video_path is not None:
                    if writer is None:
                        video_path.parent.mkdir(parents=True, exist_ok=True)
                        writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                                 (frame.shape[1], frame.shape[0]))
                    writer.write(draw(frame, line))
            sent, summary.frames = encoded, summary.frames + 1
            if end:
                summary.ended = "interrupted" if stop.is_set() and not last else "end of stream"
                return summary
        if sent is not None:  # a live source ended after its newest frame was sent: END goes with that frame again
            send_frame(client, stream_id, sent, end=True, model=model, timeout=timeout)
        return summary
    except InferenceServerException as exc:
        summary.ended = f"server: {exc.message() or exc}"
        return summary
    finally:
        if live:
            summary.dropped = live.dropped
            live.close()
        else:
            capture.release()
        if writer is not None:
            writer.release()


def resend(client, stream_id: int, encoded: bytes, end: bool, model: str, timeout: float, lost: bool,
           window_s: float = RESTART_WINDOW_S) -> tuple[dict[str, np.ndarray], bool]:
    """Send a frame again after the server failed it, retrying until ``window_s`` has passed: as it was while the
    server still holds the stream (the detector failed once: the tracker did not move), as the START of a new sequence
    once the server says it lost it (``lost``; its stub died and the model was reloaded, or it went idle). The
    answer, and whether the sequence started again; raises the last refusal."""
    import time

    from tritonclient.utils import InferenceServerException

    deadline = time.monotonic() + window_s
    while True:
        try:
            return send_frame(client, stream_id, encoded, start=lost, end=end, model=model, timeout=timeout), lost
        except InferenceServerException as exc:
            if bad_frame(exc) or time.monotonic() > deadline:
                raise
            lost = lost or sequence_lost(exc)
        time.sleep(0.5)


def new_stream_id() -> int:
    """A sequence ID no other client of the server is likely to hold (63 random bits, never 0)."""
    import secrets

    return secrets.randbits(63) | 1


def track_sources(sources: Sequence[str], urls: Sequence[str], out: Path, video_dir: Path | None = None,
                  model: str = TRACK, timeout: float = 300.0, log: Callable[[str], None] = print) -> int:
    """``detect --track``: every source as its own sequence, on its own thread and gRPC client (sources spread over
    ``urls``, each staying on one server), one JSON line per frame in ``out``. Ctrl-C (or SIGTERM) ends every
    sequence with its next frame. Exit status: 0, 1 when a source could not be read to its end or a frame was
    refused, 130 when interrupted."""
    import json
    import signal

    import tritonclient.grpc as grpcclient

    from python_models.client import served_spec

    stop = threading.Event()
    lock = threading.Lock()
    out.parent.mkdir(parents=True, exist_ok=True)
    sink = open(out, "w")

    def write(line: dict) -> None:
        with lock:
            sink.write(json.dumps(line) + "\n")
            sink.flush()

    summaries: list[StreamSummary] = []

    def run(index: int, source: str) -> None:
        client = grpcclient.InferenceServerClient(urls[index % len(urls)])
        try:
            spec = served_spec(client, model)
            video = video_dir / f"{index}_{Path(source.rstrip('/')).stem or 'stream'}.avi" if video_dir else None
            summary = track_source(client, source, new_stream_id(), write, stop, spec, video, model, timeout)
        except Exception as exc:  # noqa: BLE001 - the server is not there, or the model is not served: said per source
            summary = StreamSummary(source, 0, ended=f"{type(exc).__name__}: {exc}")
        finally:
            client.close()
        with lock:
            summaries.append(summary)

    def interrupt(*_) -> None:
        if not stop.is_set():
            log("interrupted: ending every stream with its next frame")
        stop.set()

    # Ctrl-C and SIGTERM set the stop flag instead of raising in whatever the main thread runs: the streams' threads
    # send their last frames, and nothing is torn down under gRPC's or FFmpeg's native threads.
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    threads = [threading.Thread(target=run, args=(i, s), name=f"stream {i}") for i, s in enumerate(sources)]
    try:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    interrupted = stop.is_set()
    sink.close()
    for summary in sorted(summaries, key=lambda s: sources.index(s.source)):
        log(json.dumps({"stream": {"source": summary.source, "frames": summary.frames, "refused": summary.refused,
                                   "dropped": summary.dropped, "restarts": summary.restarts,
                                   "ended": summary.ended}}))
    if interrupted:
        return 130
    failed = any(s.refused or s.ended != "end of stream" for s in summaries)
    return 1 if failed else 0
