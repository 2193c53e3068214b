"""Bring a Python-backend model back when one of its stub processes dies.

Triton's Python backend no longer restarts a dead stub (the restart was removed after
24.05; triton-inference-server/server#8604): the instance then fails every request
routed to it while the health endpoints still say ready. The documented way back is
to load the model again, which Triton does in the background and swaps in when
ready. So the server runs in explicit model-control mode with every model loaded at
start, the repository API locked behind the admin key, and this supervisor, which
holds the key, watches the stubs and reloads the model whose stub died.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

STUB_NAME = "triton_python_backend_stub"


@dataclass(frozen=True)
class Stub:
    pid: int
    model: str
    instance: str


def python_stubs(server_pid: int) -> list[Stub]:
    """The live stub processes under the server, with the model each serves (read from its command line)."""
    stubs = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        # exec <stub> <repository>/<model>/<version>/model.py <shm region> ... <instance name> ...
        words = " ".join(cmdline).split()
        if not any(w.endswith(STUB_NAME) for w in words):
            continue
        model_file = next((Path(w) for w in words if w.endswith("/model.py")), None)
        if model_file is None:
            continue
        model = model_file.parents[1].name
        instance = next((w for w in words if w.startswith(f"{model}_")), model)
        stubs.append(Stub(child.pid, model, instance))
    return stubs


def is_dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def reload_model(grpc_url: str, model: str, headers: dict[str, str]) -> None:
    """Load ``model`` again with its current config: Triton builds new instances, then swaps them in."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        config = client.get_model_config(model, as_json=True)["config"]
        # A load that carries a config always (re)loads, even when nothing on disk changed.
        client.load_model(model, config=json.dumps(config), headers=headers)
    finally:
        client.close()


class StubSupervisor(threading.Thread):
    """Polls the server's stubs; when one dies, reloads its model once and reports it."""

    RETRY_S = 10.0

    def __init__(self, server_pid: int, grpc_url: str, headers: dict[str, str], interval_s: float = 1.0,
                 log: Callable[[str], None] = print) -> None:
        super().__init__(name="stub-supervisor", daemon=True)
        self.server_pid, self.grpc_url, self.headers = server_pid, grpc_url, headers
        self.interval_s, self.log = interval_s, log
        self.watched: dict[int, Stub] = {}
        self.reloads: list[tuple[float, str]] = []
        self._next_try: dict[int, float] = {}
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> list[str]:
        """One pass: remember new stubs, reload the models of dead ones; return the models reloaded."""
        for stub in python_stubs(self.server_pid):
            self.watched.setdefault(stub.pid, stub)
        reloaded = []
        for pid, stub in list(self.watched.items()):
            if not is_dead(pid) or time.monotonic() < self._next_try.get(pid, 0.0):
                continue
            del self.watched[pid]
            if stub.model in reloaded:
                continue
            self.log(f"supervisor: stub {stub.instance} (pid {pid}) of {stub.model} died; reloading {stub.model}")
            try:
                reload_model(self.grpc_url, stub.model, self.headers)
            except Exception as exc:  # noqa: BLE001 - keep watching; the next pass retries what is still dead
                self.log(f"supervisor: reloading {stub.model} failed: {exc}; retrying in {self.RETRY_S:.0f} s")
                self.watched[pid] = stub
                self._next_try[pid] = time.monotonic() + self.RETRY_S
                continue
            self.reloads.append((time.time(), stub.model))
            reloaded.append(stub.model)
            self.log(f"supervisor: {stub.model} reloaded")
        return reloaded

    def run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not psutil.pid_exists(self.server_pid):
                    return
                self.check()
            except psutil.Error:
                continue
