"""Shared fixtures: sample images, and one real Triton server (CPU profile) for the whole session.

Every test that needs a live server, through any fixture that starts one, is marked ``server`` at collection
(``pytest -m "not server"`` is the fast loop), and so is every test marked ``slow`` (the image build's rehearsal, which
needs no server but takes a server test's time); a session that leaves ``git status`` other than it found it fails.
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
        if any(starts_a_server(d.func) for chain in chains for d in chain) or item.get_closest_marker("slow"):
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


class StandInTensor:
    """``pb_utils.Tensor``: a named array, on the host."""

    def __init__(self, name: str, array) -> None:
        self._name, self._array = name, array

    @classmethod
    def from_dlpack(cls, name: str, capsule) -> "StandInTensor":
        from torch.utils import dlpack

        return cls(name, dlpack.from_dlpack(capsule).cpu().numpy())

    def name(self) -> str:
        return self._name

    def as_numpy(self):
        return self._array

    def is_cpu(self) -> bool:
        return True


class StandInError:
    """``pb_utils.TritonError``: a message and a code (the codes' values are the stand-in's own)."""

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = 0) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class StandInResponse:
    """``pb_utils.InferenceResponse``: output tensors, or an error."""

    def __init__(self, output_tensors=None, error: StandInError | None = None) -> None:
        self._tensors, self._error = list(output_tensors or []), error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> StandInError | None:
        return self._error

    def output_tensors(self) -> list:
        return self._tensors

    def arrays(self) -> dict:
        """The tests' view: each output tensor's array by name."""
        return {tensor.name(): tensor.as_numpy() for tensor in self._tensors}


class StandInMetric:
    def __init__(self, labels: dict) -> None:
        self.labels, self.value = dict(labels), 0.0

    def increment(self, value: float) -> None:
        self.value += value

    def set(self, value: float) -> None:
        self.value = value


class StandInMetricFamily:
    """``pb_utils.MetricFamily``: its metrics stay readable (``metrics``)."""

    COUNTER, GAUGE = "counter", "gauge"

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.description, self.kind = name, description, kind
        self.metrics: list[StandInMetric] = []
        FAMILIES.setdefault(name, []).append(self)

    def Metric(self, labels: dict | None = None) -> StandInMetric:  # noqa: N802 - pb_utils' name
        metric = StandInMetric(labels or {})
        self.metrics.append(metric)
        return metric


FAMILIES: dict[str, list[StandInMetricFamily]] = {}
"""The metric families the models under the stand-in created, by name (emptied by each test's ``pb_utils``)."""


def counted(family: str, **labels: str) -> float:
    """What the models under the stand-in counted into ``family``'s metrics with these labels."""
    return sum(metric.value for f in FAMILIES.get(family, []) for metric in f.metrics if metric.labels == labels)


class StandInRequest:
    """``pb_utils.InferenceRequest`` (BLS): ``exec`` runs the model of that name from ``MODELS`` on this one request,
    as Triton would with a batch of one, and returns its response."""

    def __init__(self, model_name: str, inputs: list, requested_output_names: list[str], **_) -> None:
        self.model_name, self.inputs, self.requested = model_name, inputs, list(requested_output_names)

    def exec(self) -> StandInResponse:
        model = MODELS.get(self.model_name)
        if model is None:
            return StandInResponse(error=StandInError(f"Failed for execute the inference request. Model "
                                                      f"'{self.model_name}' is not ready.", StandInError.NOT_FOUND))
        (response,) = model.execute([{tensor.name(): tensor.as_numpy() for tensor in self.inputs}])
        if response.has_error():
            return response
        return StandInResponse([t for t in response.output_tensors() if t.name() in self.requested])


MODELS: dict = {}
"""The models a BLS request under the stand-in can call, by name: anything with ``execute(requests)``."""


def _triton_modules() -> list[str]:
    return [name for name in sys.modules if name.startswith("python_models.runtime.triton.")
            or name.startswith("python_models.serving.twins.")]


@pytest.fixture
def pb_utils(monkeypatch):
    """A stand-in for Triton's ``triton_python_backend_utils``, which exists only inside a Python-backend stub: enough
    of it to run the Python models' ``initialize`` and ``execute`` in the test's process. A request is a dict of input
    arrays; responses are ``StandInResponse``; the metrics the models count are read with ``counted``; a BLS request
    runs the model registered under its name in ``MODELS``. The models' modules are imported afresh under it."""
    import types

    stand_in = types.ModuleType("triton_python_backend_utils")
    stand_in.Tensor = StandInTensor
    stand_in.TritonError = StandInError
    stand_in.InferenceResponse = StandInResponse
    stand_in.InferenceRequest = StandInRequest
    stand_in.MetricFamily = StandInMetricFamily

    def get_input_tensor_by_name(request: dict, name: str):
        return StandInTensor(name, request[name]) if name in request else None

    stand_in.get_input_tensor_by_name = get_input_tensor_by_name
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stand_in)
    for name in _triton_modules():  # imported before with another stand-in: restored after the test
        monkeypatch.delitem(sys.modules, name)
    FAMILIES.clear()
    MODELS.clear()
    yield stand_in
    for name in _triton_modules():
        sys.modules.pop(name, None)
    FAMILIES.clear()
    MODELS.clear()


@pytest.fixture
def adapter(pb_utils):
    """``python_models.runtime.triton.adapter`` outside a Python-backend stub (``pb_utils``)."""
    import importlib

    return importlib.import_module("python_models.runtime.triton.adapter")
