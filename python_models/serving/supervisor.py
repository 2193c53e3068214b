"""Bring a Python-backend model back when one of its stub processes dies, every time it dies.

Triton's Python backend no longer restarts a dead stub (the restart was removed after
24.05; triton-inference-server/server#8604): the instance then fails every request
routed to it while the health endpoints still say ready. The documented way back is
to load the model again, which Triton does in the background and swaps in when
ready. So the server runs in explicit model-control mode with every model loaded at
start, the repository API locked behind the admin key, and this supervisor, which
holds the key, watches the stubs and reloads the model whose stub died.

Three things make that hold the second and third time, not only the first:
- A model is missing a stub when fewer live stubs serve it than its config has
  instances (read from Triton), not when a pid it happened to see disappears: a stub
  that dies before the first look is found too. The stubs of the instances a reload
  replaced are retired: their exit is not a death, and while they linger (Triton
  unloads the old instances in the background) they do not count as serving.
- Triton loads new instances only for a config that differs from the serving one in
  more than ``instance_group`` and ``version_policy``; an equal one only updates the
  instance group, which keeps every instance, the one whose stub died too (core r24.10
  and r26.05: ``ModelLifeCycle::AsyncLoad``, ``ConfigChangeRequiresReload``; on 2.51 a
  second reload sending the first one's config started no stub). So every reload sends
  the config with a new ``supervisor_generation`` parameter, which no model reads.
- A reload counts as done only when as many new stub processes as the config asks
  for are seen serving; otherwise it is retried.

When a stub dies under traffic, Triton never finishes unloading the instances the
reload replaced (seen with Triton 2.51, the CPU profile's: no "unloaded" for them, and
at exit it still counts them live and waits out its exit timeout), and their surviving
stubs live on with their memory, on a GPU their CUDA context and weights: every crash
would leave the model's other instances behind. (Killed while idle, the old instances
unload and their stubs exit within seconds.) Retired stubs still alive
``RETIRED_GRACE_S`` after the reload, long after any request the old instances held,
are killed; a retired stub is forgotten once it is gone, so its pid, handed by the
system to a new stub, is not taken for it.
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
GENERATION_PARAMETER = "supervisor_generation"


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


def configured_instances(config: dict) -> int:
    """Stub processes a loaded Python model runs: each group's count, times its GPUs for a GPU group."""
    total = 0
    for group in config.get("instance_group", []) or [{"count": 1}]:
        total += int(group.get("count", 1)) * max(1, len(group.get("gpus", [])))
    return total


class TritonControl:
    """What the supervisor asks Triton, through the admin key."""

    def __init__(self, grpc_url: str, headers: dict[str, str]) -> None:
        self.grpc_url, self.headers = grpc_url, headers

    def _client(self):
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.grpc_url)

    def python_models(self) -> dict[str, int]:
        """Every READY Python-backend model and the stubs its config asks for."""
        client = self._client()
        try:
            index = client.get_model_repository_index(headers=self.headers, as_json=True).get("models", [])
            wanted = {}
            for entry in index:
                if entry.get("state") != "READY":
                    continue
                config = client.get_model_config(entry["name"], as_json=True)["config"]
                if config.get("backend") == "python":
                    wanted[entry["name"]] = configured_instances(config)
            return wanted
        finally:
            client.close()

    def reload(self, model: str, generation: int) -> None:
        """Load ``model`` again with its current config and a new generation: Triton builds new instances and swaps
        them in (the call returns once they are loaded)."""
        client = self._client()
        try:
            config = client.get_model_config(model, as_json=True)["config"]
            config.setdefault("parameters", {})[GENERATION_PARAMETER] = {"string_value": str(generation)}
            client.load_model(model, config=json.dumps(config), headers=self.headers)
        finally:
            client.close()


class StubSupervisor(threading.Thread):
    """Polls the server's stubs; when a model has fewer than its config asks for, reloads it until new ones serve."""

    RETRY_S = 10.0
    NEW_STUBS_TIMEOUT_S = 120.0
    RETIRED_GRACE_S = 60.0

    def __init__(self, server_pid: int, grpc_url: str, headers: dict[str, str], interval_s: float = 1.0,
                 log: Callable[[str], None] = print, control: TritonControl | None = None) -> None:
        super().__init__(name="stub-supervisor", daemon=True)
        self.server_pid, self.interval_s, self.log = server_pid, interval_s, log
        self.control = control or TritonControl(grpc_url, headers)
        self.expected: dict[str, int] = {}
        self.reloads: list[tuple[float, str]] = []
        self.generation = 0
        self.retired: dict[int, tuple[float, str, psutil.Process]] = {}
        """Live stubs of instances a reload replaced, by pid: when to kill them, their model, and the process (which
        knows its start time: a recycled pid is not taken for it)."""
        self._next_try: dict[str, float] = {}
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def refresh(self) -> None:
        """Learn, from Triton, which Python models are loaded and how many stubs each should have."""
        self.expected = self.control.python_models()

    def check(self) -> list[str]:
        """One pass: reload every model with fewer live stubs than instances; return the models reloaded."""
        if not self.expected:
            self.refresh()
        self._settle_retired()
        live: dict[str, list[Stub]] = {}
        all_stubs = python_stubs(self.server_pid)
        for stub in all_stubs:
            if stub.pid not in self.retired:
                live.setdefault(stub.model, []).append(stub)
        reloaded = []
        for model, wanted in self.expected.items():
            have = live.get(model, [])
            if len(have) >= wanted or time.monotonic() < self._next_try.get(model, 0.0) or self._stop.is_set():
                continue
            self.log(f"supervisor: {model} has {len(have)} of its {wanted} stubs; reloading it")
            if self._reload(model, wanted, {s.pid for s in all_stubs if s.model == model}):
                reloaded.append(model)
        return reloaded

    def _reload(self, model: str, wanted: int, old: set[int]) -> bool:
        self.generation += 1
        replaced = []  # the processes, taken now: a pid that exits during the reload may come back as another's
        for pid in old:
            try:
                replaced.append(psutil.Process(pid))
            except psutil.Error:
                continue
        try:
            self.control.reload(model, self.generation)
            new = self._wait_for_new_stubs(model, wanted, old)
        except Exception as exc:  # noqa: BLE001 - keep watching; the next pass retries
            new, why = [], f"{type(exc).__name__}: {exc}"
        else:
            why = f"no {wanted} new stub processes within {self.NEW_STUBS_TIMEOUT_S:.0f} s"
        if len(new) < wanted:
            self.log(f"supervisor: reloading {model} failed ({why}); retrying in {self.RETRY_S:.0f} s")
            self._next_try[model] = time.monotonic() + self.RETRY_S
            return False
        deadline = time.monotonic() + self.RETIRED_GRACE_S
        self.retired.update({process.pid: (deadline, model, process) for process in replaced})
        self.reloads.append((time.time(), model))
        self.log(f"supervisor: {model} reloaded: new stubs {', '.join(str(p) for p in sorted(new))} serving")
        return True

    def _settle_retired(self) -> None:
        """Forget retired stubs that are gone; kill those still alive past their deadline."""
        now, killed = time.monotonic(), {}
        for pid, (deadline, model, process) in list(self.retired.items()):
            try:
                if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                    del self.retired[pid]
                elif now >= deadline:
                    process.kill()
                    del self.retired[pid]
                    killed.setdefault(model, []).append(pid)
            except psutil.Error:
                del self.retired[pid]
        for model, pids in killed.items():
            self.log(f"supervisor: {model}: killed retired stubs {', '.join(map(str, sorted(pids)))}, alive "
                     f"{self.RETIRED_GRACE_S:.0f} s after the reload (Triton did not unload the instances it replaced)")

    def _wait_for_new_stubs(self, model: str, wanted: int, old: set[int]) -> list[int]:
        deadline = time.monotonic() + self.NEW_STUBS_TIMEOUT_S
        while True:
            new = [s.pid for s in python_stubs(self.server_pid) if s.model == model and s.pid not in old]
            if len(new) >= wanted or time.monotonic() > deadline or self._stop.is_set():
                return new
            time.sleep(0.2)

    def run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not psutil.pid_exists(self.server_pid):
                    return
                self.check()
            except psutil.Error:
                continue
            except Exception as exc:  # noqa: BLE001 - Triton busy or restarting: look again next pass
                self.log(f"supervisor: could not check the stubs ({type(exc).__name__}: {exc})")
