"""Locust load on the public models, KServe v2 over tritonclient gRPC, every answer checked.

    .venv/bin/locust -f locustfiles/yolo11.py --host 127.0.0.1:8001 --headless -u 8 -r 8 -t 60s \
        --csv reports/locust [--models yolo11_trt,yolo11_dali_batch] [--images DIR] [--images-per-request 4]

Each user holds its own gRPC client (tritonclient clients are not thread-safe) and
cycles through the models, so locust's statistics have one row per model. A
response that breaks the contract (shapes, dtypes, ``num_detections`` bounds, boxes
outside the image, scores out of order) counts as a failure, like an error.
"""

from __future__ import annotations

# grpcio blocks gevent's loop unless told otherwise, before any channel exists.
from grpc.experimental import gevent as grpc_gevent

grpc_gevent.init_gevent()

import itertools  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from locust import User, constant, events, task  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")

from python_models.client import contract_violations, image_files, image_size, infer_grpc, ready_public_models  # noqa: E402
from python_models.client import served_spec  # noqa: E402

class WrongAnswer(Exception):
    """The server answered, but not what the contract promises."""


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument("--models", default="", help="comma-separated public models (default: every one the server has ready)")
    parser.add_argument("--images", default="", help="a directory of JPEG/PNG files (default: the ultralytics sample images)")
    parser.add_argument("--images-per-request", type=int, default=1)


class Workload:
    """What every user sends: the images (with their sizes, to check boxes) and the models, read once."""

    images: list[tuple[bytes, tuple[int, int]]] = []
    models: list[str] = []
    specs: dict = {}
    unchecked: dict[str, str] = {}
    host: str | None = None


def _load(environment) -> None:
    """Read the images and ask the server what each model serves, once per host."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    if Workload.host == environment.host:
        return
    options = environment.parsed_options
    try:
        files = image_files(Path(options.images) if options and options.images else None)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    Workload.images = []
    for path in files:
        data = path.read_bytes()
        Workload.images.append((data, image_size(data)))
    client = grpcclient.InferenceServerClient(environment.host)
    try:
        Workload.models = options.models.split(",") if options and options.models else ready_public_models(client)
        if not Workload.models:
            raise SystemExit(f"no public model is ready at {environment.host}")
        # Answers are checked against what each model states it serves (class count, thresholds, rows); a model
        # that states nothing cannot be checked, and every answer of it counts as wrong, with the reason.
        Workload.specs, Workload.unchecked = {}, {}
        for model in Workload.models:
            try:
                Workload.specs[model] = served_spec(client, model)
            except ValueError as exc:
                Workload.unchecked[model] = str(exc)
    except InferenceServerException as exc:
        raise SystemExit(f"cannot read what {environment.host} serves: {exc}") from None
    finally:
        client.close()
    Workload.host = environment.host


@events.init.add_listener
def _load_before_the_clock_starts(environment, **_kwargs) -> None:
    # --run-time starts counting beside test_start: a second of loading there is a second less of load in a
    # short run (or none at all on a busy machine). With --host given, the load is read before the clock starts.
    if environment.host:
        _load(environment)


@events.test_start.add_listener
def _load_for_the_web_ui_host(environment, **_kwargs) -> None:
    _load(environment)


class TritonGrpcUser(User):
    host = "127.0.0.1:8001"
    wait_time = constant(0)
    _ids = itertools.count()

    def on_start(self) -> None:
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(self.host)
        start = next(self._ids)
        self.models = itertools.islice(itertools.cycle(Workload.models), start % len(Workload.models), None)
        self.images = itertools.islice(itertools.cycle(Workload.images), start % len(Workload.images), None)
        options = self.environment.parsed_options
        self.per_request = max(1, options.images_per_request if options else 1)

    def on_stop(self) -> None:
        # Closed and dropped now, while gevent's loop runs: tritonclient's __del__ closes the channel again, and a
        # gRPC channel closed during interpreter shutdown can deadlock with gRPC's gevent poller (locust printed
        # its summary and never exited).
        self.client.close()
        self.client = None

    @task
    def infer(self) -> None:
        model = next(self.models)
        batch = [next(self.images) for _ in range(self.per_request)]
        start = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            outputs = infer_grpc(self.client, model, [data for data, _ in batch], timeout=300)
            length = sum(v.nbytes for v in outputs.values() if v is not None)
            spec = Workload.specs.get(model)
            problems = ([Workload.unchecked[model]] if spec is None
                        else contract_violations(outputs, [size for _, size in batch], spec))
            if problems:
                exception = WrongAnswer("; ".join(problems))
        except Exception as exc:  # noqa: BLE001 - every error is a failed request in locust's statistics
            exception = exc
        self.environment.events.request.fire(
            request_type="grpc", name=model, response_time=(time.perf_counter() - start) * 1000,
            response_length=length, exception=exception, context={},
        )
