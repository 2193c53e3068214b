"""Build the TensorRT plans with the serving image's own ``trtexec``, and prove each plan loads on its server.

A plan deserialises only on the TensorRT build that made it, all four version components
(a server issue shows "expecting 8.6.1.2 got 8.6.1.6"). So plans are built inside the
image that serves them, with the ``trtexec`` it ships (``deployment.TRTEXEC``; the image has
no ``tensorrt`` Python module), and every plan's header is compared with the ``libnvinfer``
that image loads: after the build, and again by the launcher before the server starts.

Precision: FP16 plans are built from ``model_fp16.onnx`` (``end2end.fp16_graph``) as
strongly typed networks, so TensorRT computes each tensor in the type the ONNX gives it:
the network in FP16, the best-class selection, NMS and the un-letterbox in FP32. FP32 plans
come from ``model.onnx`` the same way. Strong typing is also the only mode of TensorRT 11.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from python_models.export import repository as repo
from python_models.export.deployment import TRITON_IMAGE, TRTEXEC
from python_models.export.artifacts import artifact, onnx_for
from python_models.contract import ModelSpec

PLAN = "model.plan"
PLAN_RECORD = "model.json"
PRECISIONS = ("fp16", "fp32")
_PLAN_TAG = 0x74727466
"""First four bytes of a serialised engine, little-endian; the version follows at bytes 24-27 (trtexec's
``--getPlanVersionOnly`` reads it there, samples/common/sampleEngines.cpp of TensorRT 10.13 to 11.0)."""


class EngineBuildError(RuntimeError):
    """A plan the served profile needs could not be built or would not load; the message says why."""


def find_trtexec() -> Path | None:
    found = shutil.which("trtexec")
    if found:
        return Path(found)
    return Path(TRTEXEC) if Path(TRTEXEC).is_file() else None


def runtime_tensorrt_version() -> str | None:
    """The four-component version of the ``libnvinfer`` this host's Triton loads, or None when it cannot be told.

    From the Debian package (``libnvinfer10`` or ``libnvinfer11``), else the NGC images' ``TRT_VERSION``;
    the library's file name carries only three components.
    """
    for package in ("libnvinfer10", "libnvinfer11"):
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                                 timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            break
        if out.returncode == 0 and out.stdout.strip():
            return _four(out.stdout.strip().split("-")[0].split("+")[0])
    return _four(os.environ.get("TRT_VERSION", "")) if os.environ.get("TRT_VERSION") else None


def _four(version: str) -> str | None:
    parts = version.strip().split(".")
    return ".".join(parts[:4]) if len(parts) >= 4 and all(p.isdigit() for p in parts[:4]) else None


def plan_tensorrt_version(plan: Path) -> str:
    """The TensorRT version recorded in a plan's header; ``EngineBuildError`` when it is not a plan."""
    with open(plan, "rb") as handle:
        head = handle.read(28)
    if len(head) < 28:
        raise EngineBuildError(f"{plan} is not a TensorRT plan: {len(head)} bytes")
    tag, serialisation = struct.unpack_from("<II", head)
    if tag != _PLAN_TAG or serialisation != 0:
        raise EngineBuildError(f"{plan} is not a TensorRT plan this code can read (header {head[:8].hex()})")
    return ".".join(str(b) for b in head[24:28])


def check_plan(plan: Path, runtime: str | None) -> None:
    """Refuse a plan the local TensorRT cannot deserialise, naming both versions."""
    if runtime is None:
        raise EngineBuildError(
            "cannot tell the exact TensorRT build of this host (no libnvinfer10/11 package, no TRT_VERSION): "
            f"run inside {TRITON_IMAGE}")
    built = plan_tensorrt_version(plan)
    if built != runtime:
        raise EngineBuildError(f"{plan} was built by TensorRT {built}, but this server loads TensorRT {runtime}: "
                               "a plan only loads on the build that made it. Rebuild it here "
                               "(docker compose run --rm export ... --force).")


@dataclass(frozen=True)
class EngineSpec:
    """One plan to build: where from, where to, and the optimisation profile of each input."""

    model: str
    onnx: Path
    plan: Path
    profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    """Input name -> (min, opt, max) shapes; max batch = the model config's ``max_batch_size``."""

    def trtexec_command(self, trtexec: Path, output: Path) -> list[str]:
        shapes = {kind: ",".join(f"{name}:{'x'.join(map(str, shape[i]))}" for name, shape in self.profiles.items())
                  for i, kind in enumerate(("min", "opt", "max"))}
        return [str(trtexec), f"--onnx={self.onnx}", f"--saveEngine={output}", "--stronglyTyped", "--skipInference",
                f"--minShapes={shapes['min']}", f"--optShapes={shapes['opt']}", f"--maxShapes={shapes['max']}"]


def engine_specs(artifacts: Path, served: ModelSpec, precision: str = "fp16") -> list[EngineSpec]:
    """Every TensorRT model of the repository, sized to its own config, from the graph of that precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    specs = []
    for definition in repo.model_definitions(served):
        config = definition.config
        if config.platform != "tensorrt_plan":
            continue
        batch = config.max_batch_size
        profiles = {
            i.name: ((1, *i.dims), (max(1, batch // 2), *i.dims), (batch, *i.dims)) for i in config.input
        }
        specs.append(EngineSpec(config.name, onnx_for(artifacts, definition, fp16=precision == "fp16"),
                                artifact(artifacts, config.name, PLAN), profiles))
    return specs


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record(spec: EngineSpec, precision: str, tensorrt: str) -> dict:
    return {"tensorrt": tensorrt, "precision": precision, "onnx": spec.onnx.name, "onnx_sha256": _sha256(spec.onnx),
            "profiles": {k: [list(s) for s in v] for k, v in spec.profiles.items()}}


def up_to_date(spec: EngineSpec, precision: str, runtime: str) -> bool:
    record = spec.plan.with_name(PLAN_RECORD)
    if not (spec.plan.exists() and record.exists() and spec.onnx.exists()):
        return False
    try:
        return json.loads(record.read_text()) == _record(spec, precision, runtime) and \
            plan_tensorrt_version(spec.plan) == runtime
    except (json.JSONDecodeError, EngineBuildError):
        return False


def build_engine(spec: EngineSpec, trtexec: Path, runtime: str, precision: str) -> Path:
    """Run trtexec into a temporary file, check the plan's TensorRT build, then move it into place."""
    if not spec.onnx.exists():
        raise EngineBuildError(f"{spec.model}: {spec.onnx} has not been exported")
    spec.plan.parent.mkdir(parents=True, exist_ok=True)
    partial = spec.plan.with_name(PLAN + ".partial")
    partial.unlink(missing_ok=True)
    result = subprocess.run(spec.trtexec_command(trtexec, partial), capture_output=True, text=True)
    if result.returncode != 0 or not partial.exists():
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        partial.unlink(missing_ok=True)
        raise EngineBuildError(f"{spec.model}: trtexec exited with {result.returncode}:\n{tail}")
    try:
        check_plan(partial, runtime)
    except EngineBuildError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(spec.plan)
    spec.plan.with_name(PLAN_RECORD).write_text(json.dumps(_record(spec, precision, runtime), indent=2) + "\n")
    return spec.plan


def build_engines(artifacts: Path, served: ModelSpec, models: list[str] | None = None, precision: str = "fp16",
                  force: bool = False, trtexec: Path | None = None, runtime: str | None = None, log=print) -> list[str]:
    """Build (or keep, when up to date) the plan of every TensorRT model in ``models`` (default: all).

    Returns the plans that could not be built, each with its reason; empty when every plan is there and
    loads on this host's TensorRT. Nothing is skipped silently.
    """
    trtexec = trtexec or find_trtexec()
    runtime = runtime or runtime_tensorrt_version()
    specs = [s for s in engine_specs(artifacts, served, precision) if models is None or s.model in models]
    if trtexec is None:
        return [f"{s.model}: no TensorRT builder here (trtexec is neither on PATH nor at {TRTEXEC}); plans are "
                f"built inside {TRITON_IMAGE}: docker compose run --rm export" for s in specs]
    if runtime is None:
        return [f"{s.model}: cannot tell this host's exact TensorRT build (no libnvinfer10/11 package, "
                "no TRT_VERSION), so no plan could be checked" for s in specs]
    failed = []
    for spec in specs:
        if not force and up_to_date(spec, precision, runtime):
            log(f"{spec.model}: plan up to date (TensorRT {runtime}, {precision})")
            continue
        try:
            build_engine(spec, trtexec, runtime, precision)
        except EngineBuildError as exc:
            failed.append(str(exc))
            continue
        log(f"{spec.model}: built {spec.plan} (TensorRT {runtime}, {precision}, max batch "
            f"{spec.profiles[next(iter(spec.profiles))][2][0]})")
    return failed


def build_for_gpu_profile(artifacts: Path, served: ModelSpec, models: list[str], precision: str = "fp16",
                          force: bool = False, log=print,
                          tracking: repo.TrackingOptions = repo.TrackingOptions()) -> list[str]:
    """Everything the GPU profile needs to serve the public ``models``: the plan of every TensorRT model behind them
    and, with Track A among them, its compiled network when its config asks for one. Returns what could not be
    built, each with its reason (``yolo11-triton export`` and ``yolo11-triton serve`` fail or report on them);
    ``tracking``: the export's, which name the detection track the tracking model needs."""
    from python_models.export.compiled_network import build_track_a

    definitions = repo.definitions_by_name(served, tracking=tracking)
    needed = {name for model in models for name in (model, *repo.models_behind(model, definitions))}
    engines = sorted(name for name in needed if definitions[name].config.platform == "tensorrt_plan")
    failed = build_engines(artifacts, served, engines, precision=precision, force=force, log=log)
    if repo.PYTORCH in needed:  # asked for, or the detection track of the tracking model
        failed += build_track_a(artifacts, served, force=force, log=log)
    return failed
