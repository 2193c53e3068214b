"""What a launcher, a tool or a test asks of a running server from outside: readiness, the models' states, memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from python_models.export import repository as repo
from python_models.serving.triton import ADMIN_KEY_HEADER


def wait_ready(url: str, process, timeout_s: float = 1800) -> bool:
    """Poll ``url`` until it answers 200 (True), or until ``process`` exits or time runs out (False)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


@dataclass(frozen=True)
class ModelState:
    name: str
    state: str
    reason: str


def model_states(http_url: str, key: str) -> list[ModelState]:
    """Every model the server knows, with its state and Triton's reason (the repository index, behind the key)."""
    import json

    index = json.loads(_repository_post(http_url, key, "index", timeout=30))
    return [ModelState(m["name"], m.get("state", "UNKNOWN"), m.get("reason", "")) for m in index]


def load_report(states: list[ModelState], expected: list[str],
                tracking: repo.TrackingOptions = repo.TrackingOptions()) -> tuple[list[str], list[str]]:
    """(lines to print, public models not serving) once the start-up loading is over; ``tracking``: the served
    repository's (its detector is among the tracking model's leaves). A public model is not serving when it, or any
    model behind it, is not READY: a Track D ensemble stays READY when the DALI leaf its guard calls failed to load
    (the guard calls it through BLS, which Triton does not count as a dependency), but it cannot decode."""
    by_name = {s.name: s for s in states}
    # which leaves a model has: the same for every spec
    definitions = repo.definitions_by_name(repo.default_spec(), tracking=tracking)
    lines, failed = [], []
    for name in expected:
        state = by_name.get(name)
        leaves = repo.models_behind(name, definitions) if name in definitions else []
        causes = [f"{leaf}: {by_name[leaf].state} {by_name[leaf].reason}".strip() for leaf in leaves
                  if leaf in by_name and by_name[leaf].state != "READY"]
        if state and state.state == "READY" and not causes:
            continue
        failed.append(name)
        own = f"{state.state} {state.reason}".strip() if state else "not loaded"
        lines.append(f"NOT SERVING {name}: {own}" + (f" (because {'; '.join(causes)})" if causes else ""))
    ready = [name for name in expected if name not in failed]
    lines.insert(0, f"serving {len(ready)} of {len(expected)} public models: {', '.join(ready) or 'none'}")
    return lines, failed


def unload(http_url: str, key: str, model: str) -> None:
    """Unload ``model`` (the repository API, behind the key): its readiness then says what its leaves' do."""
    _repository_post(http_url, key, f"models/{model}/unload", timeout=120)


def _repository_post(http_url: str, key: str, path: str, timeout: float) -> bytes:
    """The body of a POST to Triton's repository API (``/v2/repository/<path>``), which needs the admin key."""
    import urllib.request

    request = urllib.request.Request(f"http://{http_url}/v2/repository/{path}", data=b"{}", method="POST",
                                     headers={ADMIN_KEY_HEADER: key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def process_tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (launcher, tritonserver, Python stubs)."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


STUB = "triton_python_backend_stub"


def memory_by_process(pid: int) -> dict[str, dict[str, float]]:
    """MiB of ``tritonserver`` (``pid``, or a launcher above it) and of each model's Python stubs, grouped by model:
    ``rss`` (what ``process_tree_rss`` sums: shared pages, such as the Python backend's shared memory that the
    server and a stub both map, are counted in each), ``pss`` (shared pages divided among the processes mapping
    them: the sum is the tree's real footprint), ``uss`` (pages no other process maps) and ``shared``
    (rss - uss). Which group grows, and whether in private or shared pages, names the cause of growth."""
    import psutil

    root = psutil.Process(pid)
    groups: dict[str, dict[str, float]] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
            command = process.cmdline()
        except psutil.Error:
            continue
        if command and command[0].endswith(STUB) and len(command) > 1:
            # The stub's first argument is the model's version folder's model.py: <repository>/<model>/<version>/model.py.
            group = f"stub {Path(command[1]).parent.parent.name}"
        else:
            group = process.name()
        totals = groups.setdefault(group, {"processes": 0, "rss": 0.0, "pss": 0.0, "uss": 0.0, "shared": 0.0})
        totals["processes"] += 1
        for key, value in (("rss", info.rss), ("pss", info.pss), ("uss", info.uss), ("shared", info.rss - info.uss)):
            totals[key] += value / 2**20
    return {name: {k: round(v, 1) for k, v in totals.items()} for name, totals in sorted(groups.items())}
