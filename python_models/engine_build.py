"""Build TensorRT plans from the exported ONNX, where TensorRT is installed (the NGC image on a GPU host)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from python_models import contract as c
from python_models import repository as repo
from python_models.deployment import SERVING_TENSORRT, TRITON_IMAGE
from python_models.export import artifact, onnx_for

NOT_HERE = (
    "TensorRT is not importable here, so no engine was built: run tools/export.py on the GPU host inside "
    f"{TRITON_IMAGE} (docker compose run export does), so the plans' TensorRT version equals the server's."
)
PLAN = "model.plan"


class TensorRTVersionError(RuntimeError):
    pass


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def check_builder_version(builder: str, serving: str = SERVING_TENSORRT) -> None:
    """Refuse to build plans the serving image's TensorRT cannot deserialise."""
    if builder.split(".")[:3] != serving.split(".")[:3]:
        raise TensorRTVersionError(
            f"this TensorRT is {builder}, but {TRITON_IMAGE} serves plans with TensorRT {serving}: a plan only "
            f"loads on the version that built it. Build inside {TRITON_IMAGE} (docker compose run export)."
        )


@dataclass(frozen=True)
class EngineSpec:
    """One plan to build: where from, where to, and the optimisation profile of each input."""

    model: str
    onnx: Path
    plan: Path
    profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    """Input name -> (min, opt, max) shapes; max batch = the model config's ``max_batch_size``."""


def engine_specs(artifacts: Path) -> list[EngineSpec]:
    """Every TensorRT model of the repository, sized to its own config."""
    specs = []
    for definition in repo.model_definitions():
        config = definition.config
        if config.platform != "tensorrt_plan":
            continue
        batch = config.max_batch_size
        profiles = {
            i.name: ((1, *i.dims), (max(1, batch // 2), *i.dims), (batch, *i.dims)) for i in config.input
        }
        specs.append(EngineSpec(config.name, onnx_for(artifacts, definition), artifact(artifacts, config.name, PLAN), profiles))
    return specs


def build_engine(spec: EngineSpec, fp16: bool = True) -> Path:
    """Parse the ONNX (EfficientNMS_TRT resolves to TensorRT's plugin) and write the plan."""
    import tensorrt as trt

    check_builder_version(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # EfficientNMS_TRT lives in the plugin library
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(spec.onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {spec.onnx}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in spec.profiles.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build {spec.plan}")
    spec.plan.parent.mkdir(parents=True, exist_ok=True)
    spec.plan.write_bytes(bytes(plan))
    spec.plan.with_suffix(".json").write_text(json.dumps(
        {"tensorrt": trt.__version__, "fp16": fp16, "onnx": spec.onnx.name, "profiles": spec.profiles}, indent=2) + "\n")
    return spec.plan


def build_repository_engines(artifacts: Path, force: bool = False, fp16: bool = True) -> list[str]:
    """Build a plan for every TensorRT model whose ONNX has been exported.

    Returns what to tell the user: one line per plan built, or ``NOT_HERE`` where TensorRT is absent.
    """
    if not tensorrt_available():
        return [NOT_HERE]
    built = []
    for spec in engine_specs(artifacts):
        if not spec.onnx.exists():
            continue
        if not force and spec.plan.exists() and spec.plan.stat().st_mtime >= spec.onnx.stat().st_mtime:
            continue
        built.append(f"built {build_engine(spec, fp16)} (max batch {spec.profiles[c.ONNX_INPUT][2][0]})")
    return built
