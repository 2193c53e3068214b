"""Detection over many images (a folder of 100K, a video) through one or several servers: ``yolo11-triton detect``.

Nothing lost, nothing twice: every input ends as exactly one output line, with its
detections or with the reason it has none. The server answers UNAVAILABLE when a queue is
full (its REJECT policy), and a server can die mid-run: such requests are sent again,
after a capped exponential backoff with jitter, to the least busy server that is up. A
file the server refuses (INVALID_ARGUMENT) is recorded with the server's message; a
multi-image request it refuses is split so that only the bad image is. The output file
is also the resume point: a second run skips every image it already holds.

All state lives in the calling thread: gRPC callbacks only put their outcome on a queue,
so sending, retrying and writing never race.
"""

from __future__ import annotations

import glob
import heapq
import io
import itertools
import json
import queue
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from python_models.client import IMAGE_SUFFIXES, Detections, pack_images, served_spec, unpack_detections
from python_models.contract import INPUT_IMAGES, PUBLIC_OUTPUT_NAMES, ModelSpec

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
VIDEO_JPEG_QUALITY = 95
RETRYABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED",
             "StatusCode.CANCELLED", "StatusCode.UNKNOWN", "StatusCode.INTERNAL")
"""Statuses answered by sending again: a full queue, a timeout, a dead or restarting server, a crashed step.
INVALID_ARGUMENT is the image's own fault and is never retried."""
FAULTS = ("StatusCode.INTERNAL", "StatusCode.UNKNOWN")


@dataclass(frozen=True)
class SourceItem:
    key: str
    """What the output line names: the file's path, or ``video.mp4#frame=000123``."""
    load: Callable[[], bytes]
    """The encoded image (read or encoded when called, in a read-ahead thread)."""


def video_frame_key(video: str | Path, index: int) -> str:
    """How a line names a frame of a video: ``video.mp4#frame=000123``."""
    return f"{video}#frame={index:06d}"


def _video_frames(path: Path) -> Iterator[SourceItem]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video")
    try:
        for index in itertools.count():
            ok, frame = capture.read()
            if not ok:
                return
            # Encoded here, in the reading thread: frames are decoded sequentially anyway.
            data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, VIDEO_JPEG_QUALITY])[1].tobytes()
            yield SourceItem(video_frame_key(path, index), lambda data=data: data)
    finally:
        capture.release()


def source_items(source: str) -> Iterator[SourceItem]:
    """A folder (recursive, image files by suffix, sorted), a video, a text file of paths, one image, or a glob."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        yield from _video_frames(path)
        return
    elif path.is_file() and path.suffix.lower() == ".txt":
        files = [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not files:
            raise ValueError(f"{source}: no such file or folder, and no file matches it as a glob")
    for file in files:
        yield SourceItem(str(file), file.read_bytes)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the server decodes the image (EXIF orientation applied), from the header only; None when
    the header cannot be read (the server's answer then says why)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1) if image.format == "JPEG" else 1
    except Exception:  # noqa: BLE001 - any unreadable header
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def done_keys(out: Path) -> set[str]:
    """Images already in an output file; a last line cut short by a kill is removed so it is done again."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        out.write_bytes(data)
    keys = set()
    for line in data.decode().splitlines():
        if line.strip():
            keys.add(json.loads(line)["image"])
    return keys


def result_line(key: str, detections: Detections | None, size: tuple[int, int] | None, error: str | None = None) -> dict:
    line: dict = {"image": key}
    if size is not None:
        line["width"], line["height"] = size
    if error is not None:
        line["error"] = error
        return line
    # Rounded and converted by numpy, not per value in Python: at a few thousand images/s with dozens of
    # detections each, this line is what the client's one thread spends most of its time on.
    boxes = np.round(detections.boxes.astype(np.float64), 2).tolist()
    scores = np.round(detections.scores.astype(np.float64), 5).tolist()
    line["detections"] = [{"class_id": k, "class_name": name, "score": score, "box": box}
                          for k, name, score, box in zip(detections.classes.tolist(), detections.names, scores, boxes)]
    return line


@dataclass
class Server:
    url: str
    client: object
    in_flight: int = 0
    down_until: float = 0.0
    failures: int = 0


@dataclass
class Request:
    items: list[tuple[str, bytes]]
    attempt: int = 0
    server: Server | None = None
    first_failure: float = 0.0


@dataclass
class Summary:
    images: int = 0
    detected: int = 0
    errors: int = 0
    retries: int = 0
    skipped: int = 0
    """Already in the output file when the run started."""
    seconds: float = 0.0
    interrupted: bool = False
    errors_by_reason: dict = field(default_factory=dict)
    by_server: dict = field(default_factory=dict)
    """Images answered by each server (its URL): how the load was spread."""

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class RetryPolicy:
    first_s: float = 0.05
    cap_s: float = 5.0
    give_up_s: float = 900.0
    """A request refused or unanswered for this long in a row (every server down, say) is recorded as an error for
    its images. A full queue alone never loses an image: it is retried until this."""
    server_down_s: float = 2.0
    """A server that could not be reached gets no requests for this long (doubling while it stays unreachable)."""
    queue_full_s: float = 0.01
    """A request refused for a full queue goes again within this (jittered): the window, not a backoff, slows the
    client; a growing backoff there left the server idle while refused requests waited out their delays."""
    decrease_every_s: float = 0.02
    """The window is halved at most this often: refusals of one burst arrive together and count once."""
    fault_attempts: int = 3
    """Attempts for a request the server failed inside (INTERNAL, UNKNOWN): a stub crash heals on a reload."""

    def delay(self, attempt: int) -> float:
        """Full jitter (AWS's "exponential backoff and jitter"): spreads the retries of many requests."""
        return random.uniform(0, min(self.cap_s, self.first_s * 2 ** attempt))


def resolve_urls(urls: Sequence[str]) -> list[str]:
    """``host:port`` as given; a DNS name that resolves to several addresses (a Kubernetes headless Service, a
    round-robin record) becomes one server per address, so that the load is spread over all of them."""
    import socket

    out = []
    for url in urls:
        host, _, port = url.rpartition(":")
        try:
            addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)})
        except (OSError, ValueError):
            addresses = []
        if len(addresses) > 1:
            out += [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]
        else:
            out.append(url)
    return list(dict.fromkeys(out))


def _server_gone(message: str) -> bool:
    text = message.lower()
    return any(s in text for s in ("connection refused", "failed to connect", "socket closed", "connection reset",
                                   "connect failed", "broken pipe", "goaway", "channel is in state"))


class BulkDetector:
    """Sends ``items`` to ``model`` on ``urls`` and calls ``write`` with one output line per image."""

    def __init__(self, urls: Sequence[str], model: str, concurrency: int = 16, images_per_request: int = 1,
                 retry: RetryPolicy = RetryPolicy(), timeout_s: float = 300.0, read_threads: int = 4) -> None:
        import tritonclient.grpc as grpcclient

        if not urls:
            raise ValueError("no server URL")
        self.grpc = grpcclient
        self.servers = [Server(url, grpcclient.InferenceServerClient(url)) for url in urls]
        self.model, self.concurrency, self.per_request = model, max(1, concurrency), max(1, images_per_request)
        # Requests allowed in flight: additive increase on every answer, halved when a queue is full, as TCP does. Without it a client far above what the server queues spends the machine on
        # refused requests and their retries, and the server idles between them.
        self.window = float(self.concurrency)
        self._last_decrease = 0.0
        self.retry, self.timeout_s, self.read_threads = retry, timeout_s, read_threads
        self.spec = self._spec()
        self.events: queue.Queue = queue.Queue()

    def _spec(self) -> ModelSpec:
        """The served model's names and thresholds, from the first server that answers (they must all agree)."""
        specs, problems = {}, []
        for server in self.servers:
            try:
                specs[server.url] = served_spec(server.client, self.model)
            except Exception as exc:  # noqa: BLE001 - a server down at the start is tried again later
                problems.append(f"{server.url}: {exc}")
        if not specs:
            raise RuntimeError(f"no server serves {self.model}: " + "; ".join(problems))
        if len(set(specs.values())) > 1:
            raise RuntimeError(f"the servers serve different models under {self.model}: {specs}")
        return next(iter(specs.values()))

    # -- sending ------------------------------------------------------------------------------------------
    def _pick(self) -> Server | None:
        """The least busy server that is up: fewest requests in flight. A slower server holds its requests
        longer, so it is sent fewer (join the shortest queue); one that died holds none and is marked down."""
        now = time.monotonic()
        up = [s for s in self.servers if s.down_until <= now]
        return min(up, key=lambda s: s.in_flight) if up else None

    def _send(self, request: Request, server: Server) -> None:
        rows = pack_images([data for _, data in request.items])
        tensor = self.grpc.InferInput(INPUT_IMAGES, list(rows.shape), "UINT8")
        tensor.set_data_from_numpy(rows)
        outputs = [self.grpc.InferRequestedOutput(name) for name in PUBLIC_OUTPUT_NAMES]
        request.server = server
        server.in_flight += 1

        def done(result, error, request=request):
            self.events.put((request, result, error))

        try:
            server.client.async_infer(self.model, [tensor], done, outputs=outputs, client_timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - a channel that cannot even start the call: same as an error
            self.events.put((request, None, exc))

    # -- the run ------------------------------------------------------------------------------------------
    def run(self, items: Iterable[SourceItem], write: Callable[[dict], None], skip: set[str] = frozenset(),
            progress: Callable[[Summary], None] | None = None) -> Summary:
        summary = Summary()
        start = time.monotonic()
        # A source may yield None: nothing ready yet, but not the end (a worker process waiting for its parent).
        pending = (item for item in items if item is None or item.key not in skip)
        reader = ThreadPoolExecutor(self.read_threads, thread_name_prefix="read")
        read_ahead: list = []
        source = iter(pending)
        exhausted = False
        retries: list[tuple[float, int, Request]] = []  # (due, tie-breaker, request)
        ticket = itertools.count()
        in_flight = 0

        def fill_read_ahead():
            nonlocal exhausted
            while not exhausted and len(read_ahead) < 4 * self.concurrency * self.per_request:
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    return
                if item is None:
                    return
                read_ahead.append((item.key, reader.submit(item.load)))

        def finish(request: Request, lines: list[dict]) -> None:
            for line in lines:
                write(line)
                summary.images += 1
                if "error" in line:
                    summary.errors += 1
                    reason = line["error"].split(":")[0][:80]
                    summary.errors_by_reason[reason] = summary.errors_by_reason.get(reason, 0) + 1
                else:
                    summary.detected += 1

        stopping = False
        try:
            while True:
                now = time.monotonic()
                # Send: due retries first, then new images, while there is room and a server is up.
                while not stopping and in_flight < max(1, int(self.window)):
                    server = self._pick()
                    if server is None:
                        break
                    if retries and retries[0][0] <= now:
                        request = heapq.heappop(retries)[2]
                    else:
                        fill_read_ahead()
                        if not read_ahead:
                            break
                        batch, read_ahead[:] = read_ahead[: self.per_request], read_ahead[self.per_request:]
                        request = Request([])
                        for key, future in batch:
                            try:
                                request.items.append((key, future.result()))
                            except OSError as exc:  # unreadable file: recorded, never sent
                                finish(request, [result_line(key, None, None, f"cannot read: {exc}")])
                        if not request.items:
                            continue
                    self._send(request, server)
                    in_flight += 1
                if in_flight == 0 and not retries and (exhausted and not read_ahead or stopping):
                    break
                wait = max(0.0, retries[0][0] - now) if retries and in_flight == 0 else 0.5
                if in_flight == 0 and not read_ahead and not exhausted:
                    wait = 0.005  # the source had nothing ready: look again soon
                try:
                    request, result, error = self.events.get(timeout=min(wait, 0.5))
                except queue.Empty:
                    if progress:
                        summary.seconds = time.monotonic() - start
                        progress(summary)
                    continue
                in_flight -= 1
                if error is None:
                    self.window = min(float(self.concurrency), self.window + 1 / max(self.window, 1.0))
                    finish(request, self._answered(request, result, summary))
                else:
                    request.server.in_flight -= 1
                    self._failed(request, error, retries, ticket, finish, summary)
                if progress:
                    summary.seconds = time.monotonic() - start
                    progress(summary)
        except KeyboardInterrupt:
            summary.interrupted = True
            stopping = True
            # Let what is in flight land, so it is written, then stop; what was never answered is left for --resume.
            deadline = time.monotonic() + 30
            while in_flight and time.monotonic() < deadline:
                try:
                    request, result, error = self.events.get(timeout=1)
                except queue.Empty:
                    continue
                in_flight -= 1
                if error is None:
                    finish(request, self._answered(request, result, summary))
        finally:
            reader.shutdown(wait=False, cancel_futures=True)
        summary.skipped = len(skip)
        summary.seconds = time.monotonic() - start
        return summary

    def _answered(self, request: Request, result, summary: Summary) -> list[dict]:
        """The output lines of an answered request, one per image; its server counted as working and answering."""
        server = request.server
        server.in_flight -= 1
        server.failures = 0
        summary.by_server[server.url] = summary.by_server.get(server.url, 0) + len(request.items)
        found = unpack_detections({name: result.as_numpy(name) for name in PUBLIC_OUTPUT_NAMES}, self.spec)
        return [result_line(key, det, image_size(data)) for (key, data), det in zip(request.items, found)]

    def _failed(self, request: Request, error, retries, ticket, finish, summary: Summary) -> None:
        status = error.status() if hasattr(error, "status") and callable(error.status) else ""
        message = error.message() if hasattr(error, "message") and callable(error.message) else str(error)
        if status == "StatusCode.INVALID_ARGUMENT":
            if len(request.items) > 1:  # one bad image refuses its whole request: find it by sending each alone
                for item in request.items:
                    heapq.heappush(retries, (0.0, next(ticket), Request([item])))
                return
            ((key, data),) = request.items
            finish(request, [result_line(key, None, image_size(data), message)])
            return
        if status and status not in RETRYABLE and not _server_gone(message):
            finish(request, [result_line(key, None, image_size(data), f"{status}: {message}")
                             for key, data in request.items])
            return
        queue_full = status == "StatusCode.UNAVAILABLE" and not _server_gone(message)
        if queue_full:  # the server is busy, not failing: send less at once (the window), not later
            now = time.monotonic()
            if now - self._last_decrease > self.retry.decrease_every_s:
                self.window, self._last_decrease = max(1.0, self.window / 2), now
        if _server_gone(message) or not status:
            # Down for longer after each failure in a row, so a dead server does not eat every request's attempts.
            server = request.server
            server.failures += 1
            server.down_until = time.monotonic() + min(self.retry.cap_s * 6, self.retry.server_down_s * 2 ** min(
                server.failures - 1, 5))
        # A step that fails inside the server (INTERNAL, UNKNOWN) rarely heals by itself: a few attempts only.
        request.first_failure = request.first_failure or time.monotonic()
        if (request.attempt + 1 >= self.retry.fault_attempts if status in FAULTS
                else time.monotonic() - request.first_failure >= self.retry.give_up_s):
            finish(request, [result_line(key, None, image_size(data), f"gave up after {request.attempt + 1} "
                                         f"attempts: {status} {message}") for key, data in request.items])
            return
        summary.retries += 1
        request.attempt += 1
        delay = random.uniform(0, self.retry.queue_full_s) if queue_full else self.retry.delay(request.attempt)
        heapq.heappush(retries, (time.monotonic() + delay, next(ticket), request))


class JsonlWriter:
    """Appends output lines, flushed as written, so that a kill loses at most the line being written (the resume
    drops a cut last line)."""

    def __init__(self, out: Path) -> None:
        self.handle = out.open("a", encoding="utf-8")

    def write(self, line: dict) -> None:
        self.write_texts([json.dumps(line)])

    def write_texts(self, texts: Sequence[str]) -> None:
        """Lines already serialised (by a worker process)."""
        self.handle.write("".join(text + "\n" for text in texts))
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def read_jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def detections_of_line(line: dict) -> Detections:
    dets = line.get("detections", [])
    return Detections(np.array([d["box"] for d in dets], np.float32).reshape(-1, 4),
                      np.array([d["score"] for d in dets], np.float32),
                      np.array([d["class_id"] for d in dets], np.int32),
                      tuple(d["class_name"] for d in dets))
