"""Live cameras against the tracking model: many streams at once, each a sequence paced like a camera.

Each stream delivers a frame every ``1 / fps`` seconds from its own start (staggered over one frame period: cameras
do not tick together) and sends only the newest frame once the previous answer is back, as ``detect --track`` does
with a live source; frames that came while it waited are dropped and counted. A stream keeps up when it drops none.
Streams run on threads (one gRPC client each) spread over processes, so that the client's own Python is not what
is measured.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from python_models.contract import TRACK

CAMERA_SIZE = (1280, 720)


def camera_frames(count: int = 60, size: tuple[int, int] = CAMERA_SIZE, quality: int = 90) -> list[bytes]:
    """A 720p camera panning slowly across Ultralytics' sample photo (``zidane.jpg``), as JPEGs."""
    import cv2
    from ultralytics.utils import ASSETS

    width, height = size
    photo = cv2.imread(str(ASSETS / "zidane.jpg"))
    scene = cv2.resize(photo, (width + 2 * count, height + count))
    return [cv2.imencode(".jpg", scene[t // 2: t // 2 + height, 2 * t: 2 * t + width],
                         [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes() for t in range(count)]


def frames_due(seconds: float, fps: float) -> int:
    """Frames a camera delivers in ``seconds`` (one at least)."""
    return max(int(seconds * fps), 1)


@dataclass
class StreamResult:
    answered: int
    dropped: int
    errors: int
    latencies_ms: list[float]
    first_error: str = ""


def _play(url: str, stream_id: int, frames: list[bytes], fps: float, seconds: float, begin: float,
          model: str) -> StreamResult:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from python_models.client.streams import send_frame

    client = grpcclient.InferenceServerClient(url)
    period, sent, result = 1.0 / fps, -1, StreamResult(0, 0, 0, [])
    total = frames_due(seconds, fps)
    try:
        while sent < total - 1:
            due = min(int((time.time() - begin) / period), total - 1)  # the newest frame the camera has delivered
            if due <= sent:
                time.sleep(max(begin + (sent + 1) * period - time.time(), 0.0))
                continue
            result.dropped += due - sent - 1
            started = time.perf_counter()
            try:
                send_frame(client, stream_id, frames[due % len(frames)], start=sent < 0, end=due == total - 1,
                           model=model, timeout=60)
                result.answered += 1
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
            except InferenceServerException as exc:
                result.errors += 1
                result.first_error = result.first_error or str(exc)[:300]
            sent = due
    finally:
        client.close()
    return result


def _process(url: str, ids: list[int], frames: list[bytes], fps: float, seconds: float, start: float,
             model: str) -> list[StreamResult]:
    from concurrent.futures import ThreadPoolExecutor

    period = 1.0 / fps
    offsets = np.random.default_rng(ids[0]).uniform(0, period, len(ids))
    with ThreadPoolExecutor(len(ids)) as pool:
        return list(pool.map(lambda k: _play(url, ids[k], frames, fps, seconds, start + offsets[k], model),
                             range(len(ids))))


def drive_streams(url: str, streams: int, fps: float, seconds: float, frames: list[bytes], model: str = TRACK,
                  processes: int = 0, first_id: int = 1) -> dict:
    """``streams`` cameras at ``fps`` for ``seconds`` against ``model``: frames/s per stream and in total, frames
    dropped, errors, and the latency of each frame answered (send to answer)."""
    processes = processes or min(streams, max(multiprocessing.cpu_count() // 4, 1))
    ids = list(range(first_id, first_id + streams))
    groups = [ids[k::processes] for k in range(processes) if ids[k::processes]]
    start = time.time() + 2.0  # every process up and connected before the first frame is due
    with ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("spawn")) as pool:
        results = [r for group in pool.map(_process, [url] * len(groups), groups, [frames] * len(groups),
                                           [fps] * len(groups), [seconds] * len(groups), [start] * len(groups),
                                           [model] * len(groups)) for r in group]
    latencies = np.array([x for r in results for x in r.latencies_ms]) if any(r.answered for r in results) else None
    per_stream = [r.answered / seconds for r in results]
    offered = streams * frames_due(seconds, fps)
    return {
        "streams": streams, "fps": fps, "seconds": seconds,
        "frames_per_s": round(sum(per_stream), 1),
        "frames_per_s_per_stream": round(float(np.mean(per_stream)), 2),
        "slowest_stream_frames_per_s": round(min(per_stream), 2),
        "dropped_share": round(sum(r.dropped for r in results) / offered, 4),
        "errors": sum(r.errors for r in results),
        "first_error": next((r.first_error for r in results if r.first_error), ""),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies is not None else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies is not None else None,
        "processes": len(groups),
    }
