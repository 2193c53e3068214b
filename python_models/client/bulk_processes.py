"""``BulkDetector`` in several worker processes, for when one Python thread is the bottleneck.

One process turns answers into JSON lines at a few thousand images per second (less when images carry dozens of
detections): below what a few GPUs serve. Here the parent reads the source, hands each worker the files to do
(paths, or the bytes of video frames), and writes the lines the workers send back; each worker is a
``BulkDetector`` with its share of the requests in flight, its own connections and its own retries. The
parent is the only writer, so the output and its resume semantics are those of one process: every input ends
as exactly one line. Ctrl-C or SIGTERM stops the workers the same way (what is in flight lands and is written);
a worker dies with its parent (``PR_SET_PDEATHSIG``), so a killed run leaves nothing behind and resumes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

from python_models.client.bulk import BulkDetector, RetryPolicy, SourceItem, Summary

_LINES_PER_MESSAGE = 64
_MESSAGE_EVERY_S = 0.1


def default_processes(cores: int | None = None) -> int:
    """One worker per four cores, 1 to 8: a worker's thread plus gRPC's and the read-ahead threads keep about
    two cores busy, and the rest belongs to whatever else runs there (a server, on one host)."""
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, min(8, cores // 4))


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's pipe closing ends the worker instead
        pass


def _stop(*_) -> None:
    raise KeyboardInterrupt


def _worker(index: int, urls: list[str], model: str, concurrency: int, per_request: int, retry: RetryPolicy,
            timeout_s: float, tasks, results) -> None:
    """Run a BulkDetector over the items on ``tasks`` (None ends them); lines go back on ``results`` as JSON."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group: only the parent decides when to stop, and says so with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    try:
        detector = BulkDetector(urls, model, concurrency, per_request, retry, timeout_s)
        pending: list[str] = []
        last = time.monotonic()

        def items() -> Iterable[SourceItem | None]:
            while True:
                try:
                    task = tasks.get_nowait()
                except queue.Empty:
                    yield None  # nothing handed over yet: the detector answers what is in flight meanwhile
                    continue
                if task is None:
                    return
                key, path, data = task
                yield SourceItem(key, Path(path).read_bytes if path is not None else (lambda data=data: data))

        def send(summary: Summary | None = None) -> None:
            nonlocal pending, last
            if pending or summary is not None:
                results.put(("lines", index, pending, summary.retries if summary else None))
                pending, last = [], time.monotonic()

        def write(line: dict) -> None:
            pending.append(json.dumps(line))
            if len(pending) >= _LINES_PER_MESSAGE or time.monotonic() - last > _MESSAGE_EVERY_S:
                send()

        def progress(summary: Summary) -> None:
            if time.monotonic() - last > _MESSAGE_EVERY_S:
                send(summary)

        summary = detector.run(items(), write, progress=progress)
        send(summary)
        results.put(("done", index, summary, None))
    except BaseException:  # noqa: BLE001 - the parent reports it and stops the run
        results.put(("error", index, traceback.format_exc(), None))


def run_in_processes(detector: BulkDetector, items: Iterable[SourceItem], write_texts: Callable[[list[str]], None],
                     processes: int, skip: set[str] = frozenset(),
                     progress: Callable[[Summary], None] | None = None) -> Summary:
    """What ``detector.run`` does, over ``processes`` workers with ``detector``'s servers, model and settings."""
    context = multiprocessing.get_context("spawn")  # gRPC's channels do not survive a fork
    results = context.Queue()
    share = max(1, detector.concurrency // processes)
    backlog = 5 * share * detector.per_request  # a worker reads ahead 4 x its share and has its share in flight
    tasks = [context.Queue() for _ in range(processes)]
    workers = [context.Process(target=_worker, args=(i, [s.url for s in detector.servers], detector.model, share,
                                                     detector.per_request, detector.retry, detector.timeout_s,
                                                     tasks[i], results), daemon=True)
               for i in range(processes)]
    for worker in workers:
        worker.start()
    summary = Summary(skipped=len(skip))
    start = time.monotonic()
    outstanding = [0] * processes
    retries = [0] * processes
    done: dict[int, Summary] = {}
    source = (item for item in items if item.key not in skip)
    exhausted = stopping = False
    turn = 0

    def dispatch() -> None:
        nonlocal exhausted, turn
        while not exhausted and not stopping and min(outstanding) < backlog:
            try:
                item = next(source)
            except StopIteration:
                exhausted = True
                for task in tasks:
                    task.put(None)
                return
            # The least loaded worker takes it; among equals, the next in turn.
            index = min(range(processes), key=lambda i: (outstanding[i], (i - turn) % processes))
            turn = index + 1
            path = getattr(item.load, "__self__", None)
            task = (item.key, str(path), None) if isinstance(path, Path) else (item.key, None, item.load())
            tasks[index].put(task)
            outstanding[index] += 1

    def receive(timeout: float) -> None:
        kind, index, payload, worker_retries = results.get(timeout=timeout)
        if kind == "error":
            raise RuntimeError(f"detection worker {index} failed:\n{payload}")
        if kind == "done":
            done[index] = payload
            return
        if payload:
            write_texts(payload)
            outstanding[index] -= len(payload)
            summary.images += len(payload)
            for text in payload:
                if '"error": ' in text:
                    summary.errors += 1
        if worker_retries is not None:
            retries[index] = worker_retries
            summary.retries = sum(retries)

    try:
        try:
            while len(done) < processes:
                dispatch()
                try:
                    receive(0.2)
                except queue.Empty:
                    dead = [i for i, w in enumerate(workers) if not w.is_alive() and i not in done]
                    if dead and results.empty():
                        raise RuntimeError(f"detection worker(s) {dead} exited without finishing "
                                           f"(exit codes {[workers[i].exitcode for i in dead]})")
                if progress:
                    summary.seconds = time.monotonic() - start
                    progress(summary)
        except KeyboardInterrupt:
            stopping = summary.interrupted = True
            for worker in workers:
                if worker.is_alive():
                    os.kill(worker.pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while len(done) < processes and time.monotonic() < deadline:
                try:
                    receive(0.5)
                except queue.Empty:
                    if not any(w.is_alive() for i, w in enumerate(workers) if i not in done):
                        break
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
    # The workers' own counts are authoritative (error reasons, detections, servers), the parent's are progress.
    totals = Summary(skipped=len(skip), interrupted=summary.interrupted, seconds=time.monotonic() - start)
    for part in done.values():
        totals.images += part.images
        totals.detected += part.detected
        totals.errors += part.errors
        totals.retries += part.retries
        totals.interrupted |= part.interrupted
        for reason, count in part.errors_by_reason.items():
            totals.errors_by_reason[reason] = totals.errors_by_reason.get(reason, 0) + count
        for url, count in part.by_server.items():
            totals.by_server[url] = totals.by_server.get(url, 0) + count
    if len(done) < processes:  # a worker stopped by the interrupt deadline: what the parent wrote is what counts
        totals.images, totals.errors, totals.retries = summary.images, summary.errors, summary.retries
    return totals
