"""The project's acceptance checks, run from outside against any live server: ``yolo11-triton check server``.

On a GPU host this is what says, within minutes, whether tracks B, C and D really work
there; in CI it runs against the CPU profile. Every check yields ``Finding`` rows naming
the model and the image; the server passes only when every row passes:

- ``ready``, ``contract_io``: every public model is ready, has the contract's inputs and outputs and states the
  served model (class names, image size, thresholds) in its ``metadata``, the same for all;
- ``contract``: every answer keeps the contract (shapes, types, boxes inside the image, ...);
- ``same_as_track_a``: every track's detections equal Track A's on the same server and image;
- ``same_as_predictor``: Track A's equal the Ultralytics predictor's on the weights file the server serves;
- ``batched_request``: one request of all images answers each as its single request does;
- ``bad_input``: every kind of bad row (damaged scans behind intact headers among them) gets INVALID_ARGUMENT
  naming the problem;
- ``batch_mates``: good requests sent together with bad ones, and with damage a decoder may read through, get their
  own correct answers; each damaged one is answered within the contract or refused alone;
- ``still_ready``: the server and the model are still ready afterwards;
- ``dali_decoded``: Track D decoded every good image with DALI (its guard's CPU-decoding counter did not move while
  only good images were sent); a Track D model that is not ready names its DALI leaf when the guard's gauge says
  the leaf is not loaded;
- ``tracking`` (``yolo11_track``): a stream started with START keeps each object's ID from frame to frame, also when
  another object leaves the scene, and ends with END; a frame of a stream never started, or of one ended, is
  refused with Triton's "must specify the START flag";
- ``batching``: concurrent requests are batched (average batch above 1 on some step, from the metrics);
- ``perf``: a short perf_analyzer sweep runs (images/s, p50, p99 recorded), its window sized from the latency of
  one request here; a level this host is too slow to measure within ``perf_budget_s`` is reported as not measured;
- ``inconclusive`` (at most a note): an image on which the reference detected nothing proves nothing,
  and a run where no image had detections fails.

The images include the first JPEG stored with each EXIF orientation 1-8 (phone photos), so every comparison above
holds on them too. Tolerances follow what the server states: Track A's precision and where it decodes (its config's
``decode``: nvJPEG pixels are not OpenCV's).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from python_models import contract as c
from python_models.client import Detections, contract_violations, image_size, infer_grpc, served_spec
from python_models.client import unpack_detections
from python_models.client.bad_inputs import EXIF_ORIENTATIONS, bad_inputs, damaged_but_decodable, exif_rotated
from python_models.client.matching import box_iou, differences, predictor_detections, tolerance

PYTORCH = c.PYTORCH


@dataclass(frozen=True)
class Finding:
    check: str
    model: str
    image: str
    passed: bool
    detail: str = ""


@dataclass
class CheckSettings:
    grpc_url: str
    metrics_url: str
    models: list[str]
    images: dict[str, bytes]
    """Name -> encoded bytes; the first JPEG and the first PNG also seed the bad inputs."""
    weights: Path | None = None
    """The ``.pt`` Track A serves, for the predictor comparison (read when the comparison runs: a server started
    with the check exports it meanwhile); None or no such file fails that comparison."""
    precision: str = "auto"
    decode: str = "auto"
    """Where the served Track A decodes JPEGs (``gpu``: nvJPEG, ``nvimgcodec``, ``cpu``); ``auto``: its config says."""
    perf_analyzer: Path | None = None
    """None: no perf sweep (a failure unless ``skip_perf``)."""
    skip_perf: bool = False
    perf_concurrency: list[int] = field(default_factory=lambda: [1, 16])
    perf_window_ms: int = 1000
    """At least this long a measurement window; longer where one request takes long here (``perf``). The check's
    sweep shows the server runs under load and records a figure; a benchmark (``yolo11-triton bench sweep``) measures
    with longer windows."""
    perf_budget_s: float = 6
    """A concurrency level whose windows would take longer in all is reported as not measured, not as a failure: a
    GPU host measures every level in the floor's windows (3 s); a CPU host as slow as a 2-core CI machine measures
    concurrency 1 and reports 16 as not measured (its windows there needed 8-10 s, enough to flip with the latency
    sampled, and a minute more per check)."""
    batching_clients: int = 16
    out: Path | None = None


def default_images() -> dict[str, bytes]:
    """The photos the ultralytics wheel ships, one of them as a PNG (the bad inputs need a real PNG too), and bus.jpg
    as a phone stores it with each EXIF orientation (turned upright, it is the same photo)."""
    import cv2
    from ultralytics.utils import ASSETS

    images = {name: (Path(ASSETS) / name).read_bytes() for name in ("bus.jpg", "zidane.jpg")}
    zidane = cv2.imread(str(Path(ASSETS) / "zidane.jpg"))
    small = cv2.resize(zidane, (640, 360), interpolation=cv2.INTER_AREA)
    images["zidane_640x360.png"] = cv2.imencode(".png", small)[1].tobytes()
    images.update({f"bus_exif_{k}.jpg": exif_rotated(images["bus.jpg"], k) for k in EXIF_ORIENTATIONS})
    return images


PERF_WINDOWS = 3
"""perf_analyzer judges stability over its last three windows; with stability off (9999%) it stops after three."""
PERF_REQUEST_SPAN = 3
"""A window spans this many times what ``concurrency`` requests take one after another on this server, so that many
start and end inside it (a window shorter than one request under load records none)."""


def perf_window_ms(floor_ms: int, concurrency: int, latency_s: float) -> int:
    """perf_analyzer's measurement window for ``concurrency`` requests in flight where one request alone takes
    ``latency_s``: at least ``floor_ms``, longer on a host slow enough that requests would outlast it."""
    return max(floor_ms, math.ceil(1000 * PERF_REQUEST_SPAN * concurrency * latency_s))


def served_choices(config: dict, precision: str = "auto", decode: str = "auto") -> tuple[str, str]:
    """(precision, decode) that Track A's served ``config`` (the server's JSON) runs with: its parameters on a GPU
    instance (Track A's own fallbacks where one is not stated), FP32 and OpenCV on a CPU one; a value other than
    ``auto`` is taken as given."""
    on_gpu = any(g.get("kind") == "KIND_GPU" for g in config.get("instance_group", []))
    stated = {name: value.get("string_value", "") for name, value in config.get("parameters", {}).items()}
    if precision == "auto":
        precision = (stated.get("precision") or c.TRACK_A_UNSTATED["precision"]) if on_gpu else "fp32"
    if decode == "auto":
        decode = (stated.get("decode") or c.TRACK_A_UNSTATED["decode"]) if on_gpu else "cpu"
    return precision, decode


class ServerCheck:
    """Runs the checks in order; ``findings`` accumulates every row."""

    def __init__(self, settings: CheckSettings, log: Callable[[str], None] = print) -> None:
        import tritonclient.grpc as grpcclient

        self.s, self.log = settings, log
        self.grpc = grpcclient
        self.findings: list[Finding] = []
        self.perf_rows: list[dict] = []
        self.sizes = {name: image_size(data) for name, data in settings.images.items()}
        self.answers: dict[str, dict[str, Detections]] = {}
        self.decode = "cpu"
        """Where the served Track A decodes (``served_track_a``, read when ``run`` starts)."""
        self.latency_s: dict[str, float] = {}
        """Median seconds one request of one image took, per model, alone on the server (``detections``)."""
        self.specs: dict[str, c.ModelSpec] = {}
        """The served model as each public model's config states it (``metadata``)."""
        self.sequence_models: set[str] = set()
        """The models checked as tracking models (``run`` asks the server which: the sequence batcher's)."""
        self._local = threading.local()

    # -- helpers -------------------------------------------------------------------------------------------
    def client(self):
        """One gRPC client per thread: a tritonclient client object is not thread-safe."""
        if not hasattr(self._local, "client"):
            self._local.client = self.grpc.InferenceServerClient(self.s.grpc_url)
        return self._local.client

    def add(self, check: str, model: str, image: str, passed: bool, detail: str = "") -> bool:
        self.findings.append(Finding(check, model, image, bool(passed), detail))
        if not passed:
            self.log(f"FAIL {check} {model} {image}: {detail}")
        return bool(passed)

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.findings)

    def served_track_a(self) -> tuple[str, str]:
        """(precision, decode) of the served Track A: its ``precision`` and ``decode`` parameters when it runs on a
        GPU, else FP32 and OpenCV (the CPU profile's); ``CheckSettings`` may say otherwise."""
        try:
            config = self.client().get_model_config(PYTORCH, as_json=True)["config"]
        except Exception:  # noqa: BLE001 - Track A absent: nothing says FP16 or nvJPEG
            config = {}
        return served_choices(config, self.s.precision, self.s.decode)

    # -- checks --------------------------------------------------------------------------------------------
    def run(self) -> list[Finding]:
        precision, self.decode = self.served_track_a()
        self.log(f"checking {', '.join(self.s.models)} on {self.s.grpc_url} at {precision}, Track A decoding on the "
                 f"{self.decode.upper()}, {len(self.s.images)} images")
        self.sequence_models = {m for m in self.s.models if self._is_tracking(m)}
        ready = [m for m in self.s.models if m not in self.sequence_models and self.ready_and_io(m)]
        before = self._fallback_rows()
        for model in ready:
            self.detections(model, precision)
        self.decoded_by_dali(ready, before)
        self.compare_tracks(ready, precision)
        self.predictor(precision)
        for model in ready:
            self.bad_inputs(model, precision)
        for model in ready:
            self.batching(model)
        for model in [m for m in self.s.models if m in self.sequence_models]:
            self.ready_and_io(model)
            if self.client().is_model_ready(model):  # its I/O aside, a tracker that forgets is worth naming
                self.tracking(model)
        if self.s.skip_perf:
            self.log("perf_analyzer sweep skipped (--skip-perf)")
        else:
            for model in ready:
                self.perf(model)
        return self.findings

    def ready_and_io(self, model: str) -> bool:
        try:
            ready = self.client().is_model_ready(model)
        except Exception as exc:  # noqa: BLE001 - the server itself is unreachable
            return self.add("ready", model, "", False, f"cannot ask the server: {exc}")
        if not self.add("ready", model, "", ready, "" if ready else
                        "not ready: the launcher's start-up report (docker compose logs triton) says why"
                        + self._leaf_not_loaded(model)):
            return False
        first = next(iter(self.specs.values()), None)
        described = True
        try:
            spec = self.specs[model] = served_spec(self.client(), model)
        except (ValueError, SyntaxError, KeyError) as exc:
            described = self.add("contract_io", model, "", False, f"no readable metadata parameter: {exc}")
            if first is None:
                return False
            spec = self.specs[model] = first  # still check its tensors against what the others serve
        else:
            if first is not None and spec != first:
                described = self.add("contract_io", model, "", False, f"serves {spec}, another public model {first}")
        meta = self.client().get_model_metadata(model, as_json=True)
        got_in = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]]
        got_out = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["outputs"]]
        names = {np.dtype(np.uint8): "UINT8", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}
        want_in = [(s.name, names[s.dtype], [-1, *s.dims]) for s in c.PUBLIC_INPUTS]
        outputs = spec.track_outputs() if model in self.sequence_models else spec.public_outputs()
        want_out = [(s.name, names[s.dtype], [-1, *s.dims]) for s in outputs]
        ok = got_in == want_in and sorted(got_out) == sorted(want_out)
        return described & self.add("contract_io", model, "", ok, "" if ok else f"inputs {got_in}, outputs "
                                    f"{got_out}; the contract says {want_in}, {want_out}")

    def infer(self, model: str, images: Sequence[bytes]) -> dict[str, np.ndarray]:
        return infer_grpc(self.client(), model, images, timeout=300)

    def detections(self, model: str, precision: str) -> None:
        """Each image alone (kept for the comparisons), then all of them in requests of up to max batch."""
        answers, seconds = {}, []
        for name, data in self.s.images.items():
            try:
                started = time.perf_counter()
                outputs = self.infer(model, [data])
                seconds.append(time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - any failure is a finding
                self.add("contract", model, name, False, f"request failed: {exc}")
                continue
            problems = contract_violations(outputs, [self.sizes[name]], self.specs[model])
            if self.add("contract", model, name, not problems, "; ".join(problems)):
                answers[name] = unpack_detections(outputs, self.specs[model])[0]
        self.answers[model] = answers
        if seconds:
            self.latency_s[model] = statistics.median(seconds)
        max_batch = self.client().get_model_config(model, as_json=True)["config"].get("max_batch_size", 1)
        names = [n for n in self.s.images if n in answers]
        for start in range(0, len(names), max(1, int(max_batch))):
            chunk = names[start : start + int(max_batch)]
            if len(chunk) < 2:
                continue
            try:
                together = unpack_detections(self.infer(model, [self.s.images[n] for n in chunk]))
            except Exception as exc:  # noqa: BLE001
                self.add("batched_request", model, ",".join(chunk), False, f"request failed: {exc}")
                continue
            for name, got in zip(chunk, together):
                allowed = tolerance(model, precision, decode=self.decode)
                problems = differences(got, answers[name], self.specs[model], *allowed)
                self.add("batched_request", model, name, not problems,
                         "; ".join(problems) and f"row of a {len(chunk)}-image request vs its own request: "
                         + "; ".join(problems))

    def compare_tracks(self, ready: list[str], precision: str) -> None:
        reference = self.answers.get(PYTORCH)
        if reference is None:
            if any(m != PYTORCH for m in ready):
                self.add("same_as_track_a", "*", "", False, f"{PYTORCH} is not served, so no track can be compared")
            return
        for model in ready:
            if model == PYTORCH:
                continue
            for name, got in self.answers.get(model, {}).items():
                ref = reference.get(name)
                if ref is None:
                    continue
                if not len(ref):
                    self.add("inconclusive", model, name, True, "Track A found nothing on this image")
                problems = differences(got, ref, self.specs[model], *tolerance(model, precision, decode=self.decode))
                self.add("same_as_track_a", model, name, not problems, "; ".join(problems))
        if not any(len(d) for d in reference.values()):
            self.add("inconclusive", PYTORCH, "*", False,
                     "no image had a detection: comparing empty answers proves nothing; pass --images with "
                     "photos of the objects your weights detect")

    def predictor(self, precision: str) -> None:
        served = self.answers.get(PYTORCH)
        if served is None:
            return
        if self.s.weights is None or not Path(self.s.weights).is_file():
            self.add("same_as_predictor", PYTORCH, "", False,
                     f"no weights file to compare with ({self.s.weights}); pass --weights <the served model.pt>")
            return
        import torch
        from ultralytics import YOLO

        half = precision == "fp16" and torch.cuda.is_available()
        model = YOLO(str(self.s.weights))
        allowed = tolerance(PYTORCH, "fp16" if half else "fp32", against="predictor", decode=self.decode)
        note = "" if half or precision == "fp32" else " (the server runs FP16, the predictor here FP32 on the CPU)"
        with tempfile.TemporaryDirectory() as folder:
            for name, data in self.s.images.items():
                if name not in served:
                    continue
                path = Path(folder) / Path(name).name
                path.write_bytes(data)
                spec = self.specs[PYTORCH]
                ref = predictor_detections(model, path, spec, half=half, device=0 if half else "cpu")
                if not len(ref):
                    self.add("inconclusive", PYTORCH, name, True, "the predictor found nothing on this image")
                problems = differences(served[name], ref, spec, *allowed)
                self.add("same_as_predictor", PYTORCH, name, not problems, "; ".join(problems) + note)

    def _is_tracking(self, model: str) -> bool:
        """The tracking model, or any model on Triton's sequence batcher."""
        try:
            return model == c.TRACK or "sequence_batching" in self.client().get_model_config(model, as_json=True)["config"]
        except Exception:  # noqa: BLE001 - not loaded: its name says
            return False

    def _guards(self, models: Sequence[str]) -> dict[str, str]:
        """Track D's guard of each of ``models`` that is a Track D tier (public model -> guard)."""
        return {c.dali_ensemble_name(t): c.dali_guard_name(t) for t in c.DALI_TIERS if c.dali_ensemble_name(t) in models}

    def _fallback_rows(self) -> dict[tuple[str, str], float] | None:
        from python_models.client.metrics import scrape

        try:
            return scrape(self.s.metrics_url, [c.DALI_CPU_FALLBACK_METRIC])
        except OSError as exc:
            self.log(f"could not read {c.DALI_CPU_FALLBACK_METRIC} from {self.s.metrics_url}: {exc}")
            return None

    def _leaf_not_loaded(self, model: str) -> str:
        """Why a Track D model is not ready, when its guard's gauge says: its DALI leaf is not loaded."""
        from python_models.client.metrics import scrape

        tier = next((t for t in c.DALI_TIERS if c.dali_ensemble_name(t) == model), None)
        if tier is None:
            return ""
        guard = c.dali_guard_name(tier)
        try:
            gauge = scrape(self.s.metrics_url, [c.DALI_LEAF_READY_METRIC]).get((c.DALI_LEAF_READY_METRIC, guard))
        except OSError:
            return ""
        return (f"; its DALI leaf {c.dali_preprocess_name(tier)} is not loaded ({c.DALI_LEAF_READY_METRIC} of {guard} "
                "is 0): the DALI backend could not load it") if gauge == 0 else ""

    def decoded_by_dali(self, ready: list[str], before: dict | None) -> None:
        """Track D decodes good images with DALI: its guard decodes a row on the CPU only when DALI refuses it alone,
        which no good image should cause (and which would change its answer)."""
        guards = self._guards(ready)
        after = self._fallback_rows() if guards else None
        if not guards or before is None or after is None:
            return
        for model, guard in guards.items():
            key = (c.DALI_CPU_FALLBACK_METRIC, guard)
            rows = after.get(key, 0.0) - before.get(key, 0.0)
            self.add("dali_decoded", model, "*", rows == 0, "" if rows == 0 else
                     f"{guard} decoded {rows:.0f} good image row(s) on the CPU: its DALI leaf refused them (the server "
                     "log names the reason)")

    def tracking(self, model: str) -> None:
        """A stream of frames through the tracking model: START, a frame again, the same frame with the first
        object painted over, END. Every object seen again keeps its ID (a tracker made afresh each frame numbers the
        remaining objects from 1 again); a frame without START of a stream never started, or ended, is refused."""
        import cv2
        from tritonclient.utils import InferenceServerException

        from python_models.client.streams import send_frame, sequence_lost

        def frame(outputs):
            count = int(outputs[c.OUTPUT_NUM_DETECTIONS][0, 0])
            return outputs[c.OUTPUT_BOXES][0, :count], outputs[c.OUTPUT_TRACK_IDS][0, :count]

        stream = int.from_bytes(np.random.default_rng().bytes(6), "big") | 1
        answers = {name: frame(send_frame(self.client(), stream, data, start=True, end=True, model=model))
                   for name, data in self.s.images.items() if data[:3] == b"\xff\xd8\xff"}
        name, (boxes, ids) = max(answers.items(), key=lambda item: int((item[1][1] > 0).sum()))
        if (ids > 0).sum() < 2:
            self.add("tracking", model, name, False, "inconclusive: no JPEG gave two tracked objects on its first "
                     "frame; pass --images with photos of the objects your weights detect")
            return
        image = cv2.imdecode(np.frombuffer(self.s.images[name], np.uint8), cv2.IMREAD_COLOR)
        first = int(np.flatnonzero(ids > 0)[0])
        x1, y1, x2, y2 = boxes[first].astype(int)
        cv2.rectangle(image, (x1, y1), (x2, y2), (114, 114, 114), thickness=-1)
        painted = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        stream += 2
        try:
            frames = [frame(send_frame(self.client(), stream, data, start=k == 0, end=k == 2, model=model))
                      for k, data in enumerate([self.s.images[name], self.s.images[name], painted])]
        except InferenceServerException as exc:
            self.add("tracking", model, name, False, f"a frame of a started stream was refused: {exc}")
            return
        problems, kept = [], 0
        (boxes0, ids0) = frames[0]
        for index, (box, track) in enumerate(zip(boxes0, ids0)):
            # Objects a tracker can tell apart: two boxes on one spot (an object detected as two classes) may trade
            # IDs in any tracker, which matches boxes, not classes.
            others = np.delete(boxes0, index, axis=0)
            if track <= 0 or (len(others) and box_iou(box[None], others).max() >= 0.3):
                continue
            for k, (boxes_k, ids_k) in enumerate(frames[1:], 1):
                same = np.flatnonzero(box_iou(box[None], boxes_k)[0] >= 0.8)
                if len(same) != 1:
                    continue
                kept += ids_k[same[0]] == track
                if ids_k[same[0]] != track:
                    problems.append(f"frame {k + 1}: the object with ID {track} on frame 1 has ID {ids_k[same[0]]}")
        if not kept:
            problems.append("no object of frame 1 was seen again with an ID")
        self.add("tracking", model, name, not problems, "; ".join(problems[:5]))
        for label, lost in (("never started", stream + 2), ("ended", stream)):
            try:
                send_frame(self.client(), lost, self.s.images[name], model=model)
            except InferenceServerException as exc:
                refused = exc.status() == "StatusCode.INVALID_ARGUMENT" and sequence_lost(exc)
                self.add("tracking", model, f"a frame of a stream {label}", refused, "" if refused else str(exc))
            else:
                self.add("tracking", model, f"a frame of a stream {label}", False, "answered without START")

    def _bad(self, model: str, data: bytes):
        """The error a bad row gets, or None when it was (wrongly) answered."""
        from tritonclient.utils import InferenceServerException

        try:
            if data:
                self.infer(model, [data])
            else:
                empty = self.grpc.InferInput(c.INPUT_IMAGES, [1, 0], "UINT8")
                empty.set_data_from_numpy(np.zeros((1, 0), np.uint8))
                self.client().infer(model, [empty])
        except InferenceServerException as exc:
            return exc
        return None

    def bad_inputs(self, model: str, precision: str) -> None:
        jpeg = next((d for n, d in self.s.images.items() if d[:3] == b"\xff\xd8\xff"), None)
        png = next((d for n, d in self.s.images.items() if d[:4] == b"\x89PNG" and len(d) > 20000), None)
        if jpeg is None or png is None:
            self.add("bad_input", model, "", False, "need a JPEG and a PNG over 20 kB among the images to build the "
                     "bad inputs from")
            return
        catalogue = bad_inputs(jpeg, png)
        server_was_ready = self.client().is_server_ready()
        for label, bad in catalogue.items():
            error = self._bad(model, bad.data)
            ok = error is not None and error.status() == "StatusCode.INVALID_ARGUMENT" and bad.message in error.message()
            self.add("bad_input", model, label, ok, "" if ok else
                     ("answered with detections" if error is None else f"{error.status()}: {error.message()[:300]}")
                     + f" (expected INVALID_ARGUMENT containing {bad.message!r})")
        good_name = next(n for n, d in self.s.images.items() if d is jpeg)
        own = self.answers.get(model, {}).get(good_name)
        # Every bad kind and every damage a decoder may read through, each between good requests, all at once.
        odd = damaged_but_decodable(jpeg)
        jobs = [job for label, bad in catalogue.items() for job in (("good", good_name, jpeg), ("bad", label, bad.data))]
        jobs += [job for label, data in odd.items() for job in (("good", good_name, jpeg), ("odd", label, data))]
        # As many in flight as the batching check sends: bad and good rows share batches, and a slow host still
        # answers each within the queue's timeout.
        with ThreadPoolExecutor(min(len(jobs), self.s.batching_clients)) as pool:
            results = list(pool.map(lambda job: self._mixed(model, job[2], raw=job[0] == "odd"), jobs))
        for index, ((kind, label, _), result) in enumerate(zip(jobs, results)):
            refused = getattr(result, "status", lambda: "")() == "StatusCode.INVALID_ARGUMENT"
            if kind == "good":
                if isinstance(result, Exception):
                    self.add("batch_mates", model, good_name, False,
                             f"good request {index} failed next to bad ones: {result}")
                elif own is not None:
                    problems = differences(result, own, self.specs[model], *tolerance(model, precision, decode=self.decode))
                    self.add("batch_mates", model, good_name, not problems, "; ".join(problems))
            elif kind == "bad":
                self.add("batch_mates", model, f"bad request {index} ({label})", refused, "" if refused else f"got {result!r}")
            else:  # answered within the contract, or refused alone: a decoder may read through such damage or not
                problems = [] if refused else (
                    [f"got {result!r}"] if isinstance(result, Exception)
                    else contract_violations(result, [self.sizes[good_name]], self.specs[model]))
                self.add("batch_mates", model, f"damaged request {index} ({label})", not problems, "; ".join(problems))
        try:
            # The server's own readiness must not drop (it may already be false for another model's failure).
            ready = (self.client().is_server_live() and self.client().is_model_ready(model)
                     and (self.client().is_server_ready() or not server_was_ready))
        except Exception as exc:  # noqa: BLE001
            ready, exc_text = False, str(exc)
        else:
            exc_text = ""
        self.add("still_ready", model, "", ready, exc_text or ("" if ready else "not ready after the bad inputs"))

    def _mixed(self, model: str, data: bytes, raw: bool = False):
        """The detections of one image (with ``raw``: the output tensors), or the server's error."""
        from tritonclient.utils import InferenceServerException

        try:
            outputs = self.infer(model, [data])
        except InferenceServerException as exc:
            return exc
        return outputs if raw else unpack_detections(outputs)[0]

    def _steps(self, model: str) -> list[str]:
        config = self.client().get_model_config(model, as_json=True)["config"]
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        return [model, *[s["model_name"] for s in steps]]

    def batching(self, model: str) -> None:
        from python_models.client.metrics import average_batch, scrape

        families = ("nv_inference_count", "nv_inference_exec_count")
        steps = self._steps(model)
        data = next(iter(self.s.images.values()))
        before = scrape(self.s.metrics_url, families)
        with ThreadPoolExecutor(self.s.batching_clients) as pool:
            list(pool.map(lambda _: self._mixed(model, data), range(2 * self.s.batching_clients)))
        after = scrape(self.s.metrics_url, families)
        averages = {step: average_batch(before, after, step)[2] for step in steps[1:] or steps}
        ok = any(avg > 1.0 for avg in averages.values())
        self.add("batching", model, "", ok, ", ".join(f"{k} {v:.2f}" for k, v in averages.items())
                 + ("" if ok else f": no step batched {self.s.batching_clients} concurrent clients"))

    def perf(self, model: str) -> None:
        from python_models.client import perf_analyzer as pa
        from python_models.client.report import PerfAnalyzerFailed, measure

        if self.s.perf_analyzer is None:
            self.add("perf", model, "", False, f"no perf_analyzer ({pa.INSTALL_HINT}; --skip-perf to go without)")
            return
        with tempfile.TemporaryDirectory() as folder:
            work = Path(self.s.out or folder) / "perf"
            work.mkdir(parents=True, exist_ok=True)
            files = []
            for name, data in self.s.images.items():
                files.append(work / Path(name).name)
                files[-1].write_bytes(data)
            input_data = pa.write_input_data(files, work / "input.json")
            for level in self.s.perf_concurrency:
                window_ms = perf_window_ms(self.s.perf_window_ms, level, self.latency_s.get(model, 0.0))
                needed_s = PERF_WINDOWS * window_ms / 1000
                if needed_s > self.s.perf_budget_s:
                    self.add("perf", model, f"concurrency {level}", True,
                             f"not measured: one request takes {1e3 * self.latency_s[model]:.0f} ms alone here, so "
                             f"{PERF_WINDOWS} windows at concurrency {level} need about {needed_s:.0f} s, over the "
                             f"budget of {self.s.perf_budget_s:.0f} s (--perf-budget-s)")
                    continue
                csv_path = work / f"{model}_c{level}.csv"
                command = pa.command(self.s.perf_analyzer, model, self.s.grpc_url, input_data, level, csv_path,
                                     measurement_ms=window_ms, max_trials=PERF_WINDOWS, stability_percent=9999)
                try:
                    run = measure(command, csv_path, model, self.s.metrics_url, self._steps(model))
                except PerfAnalyzerFailed as exc:
                    # A window that no request both started and ended in measures nothing about the deployment.
                    unmeasured = "No valid requests recorded" in str(exc)
                    self.add("perf", model, f"concurrency {level}", unmeasured,
                             (f"not measured in {window_ms} ms windows: " if unmeasured else "") + str(exc))
                    continue
                row = {"model": model, "concurrency": level, "images_per_s": round(run.perf.throughput, 1),
                       "p50_ms": round(run.perf.p50_ms, 1), "p99_ms": round(run.perf.p99_ms, 1),
                       "failures": run.failures, "window_ms": window_ms}
                self.perf_rows.append(row)
                ok = run.perf.throughput > 0 and not run.failures
                self.add("perf", model, f"concurrency {level}", ok,
                         f"{row['images_per_s']} images/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                         f"{run.failures:.0f} failed requests ({window_ms} ms windows)")

    # -- report --------------------------------------------------------------------------------------------
    def write_report(self, out: Path, meta: dict) -> tuple[Path, Path]:
        out.mkdir(parents=True, exist_ok=True)
        report = {"passed": self.passed, "meta": meta, "findings": [asdict(f) for f in self.findings],
                  "perf": self.perf_rows}
        json_path = out / "check.json"
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        failed = [f for f in self.findings if not f.passed]
        lines = [f"# Server check: {'PASSED' if self.passed else 'FAILED'}", "",
                 *[f"- {k}: {v}" for k, v in meta.items()], "",
                 f"{len(self.findings)} checks, {len(failed)} failed.", ""]
        if failed:
            lines += ["## Failures", "", "| check | model | image | detail |", "|---|---|---|---|",
                      *[f"| {f.check} | {f.model} | {f.image} | {f.detail.replace('|', '/')} |" for f in failed], ""]
        summary: dict[tuple[str, str], list[bool]] = {}
        for f in self.findings:
            summary.setdefault((f.model, f.check), []).append(f.passed)
        lines += ["## Every check", "", "| model | check | passed |", "|---|---|---|",
                  *[f"| {m} | {ch} | {sum(v)}/{len(v)} |" for (m, ch), v in summary.items()], ""]
        if self.perf_rows:
            lines += ["## perf_analyzer (gRPC, the check's images)", "",
                      "| model | concurrency | images/s | p50 ms | p99 ms |", "|---|---|---|---|---|",
                      *[f"| {r['model']} | {r['concurrency']} | {r['images_per_s']} | {r['p50_ms']} | {r['p99_ms']} |"
                        for r in self.perf_rows], ""]
        md_path = out / "check.md"
        md_path.write_text("\n".join(lines))
        return json_path, md_path


def timestamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
