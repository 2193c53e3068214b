"""Build TensorRT plans from the exported ONNX, where TensorRT is installed (the NGC image on a GPU host)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

NOT_HERE = (
    "TensorRT is not importable here, so no engine was built: run tools/export.py on the GPU host inside the "
    "NGC Triton image that serves them, so the plans' TensorRT version equals the server's."
)


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def build_engine(onnx_path: Path, plan_path: Path, max_batch: int, input_name: str, chw: tuple[int, int, int],
                 fp16: bool = True) -> Path:
    """Parse ``onnx_path`` and write a plan whose optimisation profile spans batch 1..``max_batch``."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # EfficientNMS_TRT lives in the plugin library
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:] if tensor.name != input_name else chw
        rest = tuple(d if d > 0 else c for d, c in zip(rest, chw)) if tensor.name == input_name else rest
        profile.set_shape(tensor.name, (1, *rest), (max(1, max_batch // 2), *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build {plan_path}")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(plan))
    return plan_path


def build_repository_engines(artifacts: Path, force: bool = False) -> list[str]:
    """Build a plan for every TensorRT model whose ONNX has been exported, sized to its config's max batch.

    Returns what to tell the user: one line per plan built, or ``NOT_HERE`` where TensorRT is absent.
    """
    if not tensorrt_available():
        return [NOT_HERE]
    from python_models import contract as c
    from python_models import repository as repo
    from python_models.export import artifact

    built = []
    for definition in repo.model_definitions():
        config = definition.config
        if config.platform != "tensorrt_plan":
            continue
        onnx_path = artifact(artifacts, config.name, "model.onnx")
        plan_path = artifact(artifacts, config.name, "model.plan")
        if not onnx_path.exists() or (plan_path.exists() and not force):
            continue
        plan = build_engine(onnx_path, plan_path, config.max_batch_size, c.ONNX_INPUT, c.LETTERBOXED_SPEC.dims)
        built.append(f"built {plan}")
    return built
