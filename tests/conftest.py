"""Shared fixtures: sample images, and one real Triton server (CPU profile) for the whole session.

Every test that needs a live server, through any fixture that starts one, is marked ``server`` at collection
(``pytest -m "not server and not slow"`` is the fast loop; ``slow``, in pyproject.toml, marks the image build's
rehearsal); a session that leaves ``git status`` other than it found it fails.
"""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ["YOLO_OFFLINE"] = "1"  # nothing downloads at test time

from ultralytics.utils import ASSETS  # noqa: E402

from python_models.client import Detections, served_spec  # noqa: E402
from python_models.contract import ModelSpec, PUBLIC_OUTPUT_NAMES, PYTORCH  # noqa: E402
from python_models.client.matching import differences, predictor_detections, tolerance  # noqa: E402, F401
from python_models.serving.status import wait_ready  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST_WEIGHTS = "yolo11n.yaml"  # untrained, BatchNorm-calibrated and bias-reset: see python_models.export.weights
SERVER_START_TIMEOUT_S = 600
COMMAND = Path(sys.executable).parent / "yolo11-triton"
"""The console command tools/bootstrap.sh installs: what the README's first command runs."""


SERVER_STARTERS = ("start_server(", "launch_server(", "launch_session_server(", '"serve.py"')
"""What the source of a fixture that starts a Triton server holds: the shared starter, or tools/serve.py by path."""


def starts_a_server(fixture) -> bool:
    try:
        source = inspect.getsource(fixture)
    except (OSError, TypeError):  # pytest's own fixtures
        return False
    return any(marker in source for marker in SERVER_STARTERS)


def pytest_collection_modifyitems(config, items) -> None:
    """The ``server`` marker, from the fixtures a test uses (directly or through other fixtures); the tests that need
    no server run first (in their files' order), while the session server starts (``EARLY``)."""
    for item in items:
        definitions = getattr(item, "_fixtureinfo", None)
        chains = definitions.name2fixturedefs.values() if definitions else ()
        if any(starts_a_server(d.func) for chain in chains for d in chain):
            item.add_marker(pytest.mark.server)
    items.sort(key=lambda item: item.get_closest_marker("server") is not None)


def git_status(checkout: Path = ROOT) -> str | None:
    """``git status --porcelain`` of ``checkout``, untracked files listed one by one; None outside a git checkout."""
    try:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=checkout,
                              capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):  # not a git checkout (an sdist): nothing to compare
        return None


SHM = Path("/dev/shm")
SHM_REGIONS = "triton_python_backend_shm_region_*"


def mapped_files() -> set[str]:
    """Every file some live process of this machine maps (what /proc/*/maps can be read for)."""
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(line.split(maxsplit=5)[-1] for line in maps.read_text().splitlines() if "/" in line)
        except OSError:  # the process ended, or is not ours to read
            continue
    return mapped


def remove_leaked_shm(existing_before: set[str]) -> list[str]:
    """Remove the Python backend's shared-memory regions (64 MB each) that appeared during this session and that no
    live process maps: servers and stubs the tests kill never unlink theirs, and on a CI machine they pile up in
    RAM run after run until the suite slows or fails."""
    mapped, removed = mapped_files(), []
    for region in SHM.glob(SHM_REGIONS):
        if region.name not in existing_before and str(region) not in mapped:
            region.unlink(missing_ok=True)
            removed.append(region.name)
    return removed


def pytest_sessionstart(session) -> None:
    session.config.stash[GIT_STATUS] = git_status()
    session.config.stash[SHM_BEFORE] = {region.name for region in SHM.glob(SHM_REGIONS)}


def pytest_sessionfinish(session, exitstatus) -> None:
    """Every server stopped; running the tests must not change the checkout: no tracked file rewritten, nothing new
    left behind."""
    for unused in EARLY.values():  # launched, and no test got as far as using it
        stop_server(unused, wait=True)
    for stopping in STOPPING:
        stopping.join()
    remove_leaked_shm(session.config.stash.get(SHM_BEFORE, set()))
    before, after = session.config.stash.get(GIT_STATUS, None), git_status()
    if before is not None and after is not None and after != before:
        changed = sorted(set(after.splitlines()) - set(before.splitlines()))
        session.config.get_terminal_writer().line(f"the tests changed the checkout (git status): {changed[:20]}",
                                                  red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


MEASURED: list[str] = []
"""Figures tests measure (accuracy against ground truth), shown at the end of the run: ``measured(line)``."""


def measured(line: str) -> None:
    MEASURED.append(line)


def pytest_terminal_summary(terminalreporter) -> None:
    if MEASURED:
        terminalreporter.section("measured in this run")
        for line in MEASURED:
            terminalreporter.line(line)


GIT_STATUS = pytest.StashKey[str | None]()
SHM_BEFORE = pytest.StashKey[set[str]]()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """Real photos in every form the contract accepts: JPEG, PNG, grayscale, landscape and tall."""
    out = tmp_path_factory.mktemp("images")
    bus = cv2.imread(str(ASSETS / "bus.jpg"))
    zidane = cv2.imread(str(ASSETS / "zidane.jpg"))
    (out / "bus.jpg").write_bytes((ASSETS / "bus.jpg").read_bytes())
    (out / "zidane.jpg").write_bytes((ASSETS / "zidane.jpg").read_bytes())
    cv2.imwrite(str(out / "zidane_640x480.png"), cv2.resize(zidane, (640, 480), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(out / "bus_gray.jpg"), cv2.cvtColor(bus, cv2.COLOR_BGR2GRAY), [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(out / "bus_480x1280.jpg"), cv2.resize(bus, (480, 1280), interpolation=cv2.INTER_AREA),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    return out


SAMPLE_NAMES = ("bus.jpg", "zidane.jpg", "zidane_640x480.png", "bus_480x1280.jpg", "bus_gray.jpg")


@pytest.fixture(scope="session")
def samples(sample_dir) -> dict[str, bytes]:
    return {name: (sample_dir / name).read_bytes() for name in SAMPLE_NAMES}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, http: int, grpc: int, metrics: int, artifacts: Path, log: Path, host: str = "127.0.0.1"):
        self.http_url = f"{host}:{http}"
        self.grpc_url = f"{host}:{grpc}"
        self.metrics_url = f"http://{host}:{metrics}/metrics"
        self.artifacts = artifacts
        self.log = log
        self.http_clients: list = []

    def grpc(self):
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.grpc_url)

    def http(self, concurrency: int = 1):
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.http_url, concurrency=concurrency, network_timeout=300)
        self.http_clients.append(client)
        return client

    @property
    def spec(self) -> ModelSpec:
        """The served model, as Track A's config states it."""
        if not hasattr(self, "_spec"):
            self._spec = served_spec(self.grpc(), PYTORCH)
        return self._spec

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


SESSION: dict = {}
"""``spec``: what the session server serves (set once it is ready)."""


def launch_server(work: Path, weights: str, *options: str, extra_models: Path | None = None, host: str = "127.0.0.1",
                  grpc_port: int | None = None, env: dict[str, str] | None = None,
                  artifacts: Path | None = None) -> Server:
    """``yolo11-triton serve`` exactly as a user runs it, on free loopback ports, started and not waited for;
    ``options`` go to it (``--imgsz``...). ``host``: another loopback address (127.0.0.2) can take the same
    ``grpc_port`` as a server on 127.0.0.1, as the pods behind one DNS name do; ``env``: added to the server's
    environment; ``artifacts``: another server's export to serve (with ``--skip-export``)."""
    ports = [free_port(), grpc_port or free_port(), free_port()]
    log = work / "server.log"
    srv = Server(*ports, artifacts=artifacts or work / "artifacts", log=log, host=host)
    cmd = [str(COMMAND), "serve", "--weights", weights, *options, "--host", host,
           "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
           "--artifacts", str(srv.artifacts), "--work-dir", str(work / "work"),
           *(["--extra-models", str(extra_models)] if extra_models else [])]
    with open(log, "wb") as sink:
        srv.process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, **(env or {})})
    return srv


def wait_server(srv: Server) -> Server:
    """``srv`` once it is ready; the test fails with the server's log when it exits or does not become ready."""
    if not wait_ready(f"http://{srv.http_url}/v2/health/ready", srv.process, SERVER_START_TIMEOUT_S):
        if srv.process.poll() is not None:
            pytest.fail(f"yolo11-triton serve exited with {srv.process.returncode}:\n{srv.log_tail()}")
        srv.process.kill()
        pytest.fail(f"server not ready after {SERVER_START_TIMEOUT_S} s:\n{srv.log_tail()}")
    return srv


def start_server(*args, **kwargs) -> Server:
    """``launch_server`` then ``wait_server``."""
    return wait_server(launch_server(*args, **kwargs))


def stop_server(srv: Server, wait: bool = False) -> None:
    """Stop a server the tests started. In the background unless ``wait``: nothing after it needs the server gone,
    and Triton takes seconds to unload its stubs (the session joins every stop before it ends)."""
    # Triton's shutdown waits for open HTTP connections (up to its 30 s exit timeout): a keep-alive client the
    # tests dropped would hold it that long.
    for client in srv.http_clients:
        client.close()
    srv.process.terminate()

    def finish() -> None:
        try:
            # Triton 2.51 never unloads instances a reload replaced (the stub kills of test_reliability): its shutdown
            # then waits out its whole 30 s exit timeout for them, with nothing left to answer.
            srv.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(srv.process.pid, 9)
            srv.process.wait()

    if wait:
        finish()
    else:
        stopping = threading.Thread(target=finish, name=f"stop {srv.grpc_url}")
        stopping.start()
        STOPPING.append(stopping)


STOPPING: list[threading.Thread] = []
"""Servers being stopped in the background; joined when the session ends."""


def launch_session_server(tmp_path_factory) -> Server:
    return launch_server(tmp_path_factory.mktemp("triton"), TEST_WEIGHTS, extra_models=ROOT / "tests" / "models")


EARLY: dict[str, Server] = {}
"""The session server, launched as soon as the tests are collected when one of them will need it: its half a
minute of export and loading then overlaps the tests that need no server, which run first (on a 2-core host they
leave a core to it)."""


def pytest_collection_finish(session) -> None:
    if session.config.option.collectonly:  # nothing will run (tests/test_suite_rules.py lists the marked tests)
        return
    if any("server" in item.fixturenames for item in session.items):
        EARLY["server"] = launch_session_server(session.config._tmp_path_factory)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    """The session's server: the untrained test network, with the tests' deliberately wrong models beside it."""
    srv = wait_server(EARLY.pop("server", None) or launch_session_server(tmp_path_factory))
    SESSION["spec"] = srv.spec
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def spec(server) -> ModelSpec:
    """What the session server serves (the untrained yolo11n.yaml: 80 classes at 640, default thresholds)."""
    return server.spec


@pytest.fixture(scope="session")
def reference_model(server):
    """The Ultralytics predictor on the very weights the server exported."""
    from ultralytics import YOLO

    from python_models.export.artifacts import weights_pt

    return YOLO(str(weights_pt(server.artifacts)))


def assert_same_detections(got: Detections, ref: Detections, min_iou: float, score_tol: float, unpaired: float = 0.0,
                           what: str = "", spec: ModelSpec | None = None) -> None:
    """``*tolerance(model)`` fills the three middle arguments; ``spec``: the served model's (default: the session
    server's)."""
    assert len(ref) > 0, f"{what}: the reference found nothing, so a comparison would prove nothing"
    problems = differences(got, ref, spec or SESSION["spec"], min_iou, score_tol, unpaired)
    assert not problems, f"{what}: " + "; ".join(problems)


def reference_detections(model, image, spec: ModelSpec | None = None) -> Detections:
    """The Ultralytics predictor on the CPU, FP32, as the CPU profile serves, at the served size and thresholds."""
    return predictor_detections(model, image, spec or SESSION["spec"])


def burst(server: Server, model: str, rows: list[bytes], outputs: list[str] | None = None) -> list:
    """One request per row, sent as fast as one client can (async gRPC) so the batcher sees them together; per row
    the ``InferResult`` or the ``InferenceServerException``, in the order sent."""
    import queue

    import tritonclient.grpc as grpcclient

    from python_models.contract import INPUT_IMAGES
    from python_models.client import pack_images

    client = server.grpc()
    answers: queue.Queue = queue.Queue()
    requested = [grpcclient.InferRequestedOutput(name) for name in (outputs or PUBLIC_OUTPUT_NAMES)]
    for index, data in enumerate(rows):
        packed = pack_images([data]) if data else np.zeros((1, 0), np.uint8)
        tensor = grpcclient.InferInput(INPUT_IMAGES, list(packed.shape), "UINT8")
        tensor.set_data_from_numpy(packed)
        client.async_infer(model, [tensor], lambda result, error, i=index: answers.put((i, result, error)),
                           outputs=requested, client_timeout=300)
    results = [None] * len(rows)
    for _ in rows:
        index, result, error = answers.get(timeout=300)
        results[index] = error if error is not None else result
    client.close()
    return results


def detections_of(result) -> Detections:
    """The detections of one single-image ``InferResult``."""
    from python_models.client import unpack_detections

    return unpack_detections({name: result.as_numpy(name) for name in PUBLIC_OUTPUT_NAMES})[0]


@pytest.fixture
def adapter(monkeypatch):
    """``python_models.runtime.triton.adapter`` outside a Python-backend stub: a stand-in for Triton's
    ``triton_python_backend_utils`` provides the one call its row functions make (reading an input tensor)."""
    import importlib
    import types

    stand_in = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, array):
            self.array = array

        def as_numpy(self):
            return self.array

    stand_in.get_input_tensor_by_name = lambda request, name: Tensor(request[name])
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stand_in)
    monkeypatch.delitem(sys.modules, "python_models.runtime.triton.adapter", raising=False)
    module = importlib.import_module("python_models.runtime.triton.adapter")
    yield module
    sys.modules.pop("python_models.runtime.triton.adapter", None)
