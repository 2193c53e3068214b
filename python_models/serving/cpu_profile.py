"""The CPU profile's repository: each TensorRT or DALI leaf replaced by its Python twin (``serving.twins``), Track A
on one CPU instance, every other config (ensembles included) as production has it, all generated for the exported
model's ``ModelSpec``, and the exported artifacts linked in."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from python_models.export import repository as repo
from python_models.export import cpu_configs
from python_models.export import repository_files
from python_models.export.artifacts import onnx_for
from python_models.contract import ModelSpec as ModelSpec


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src.resolve())


@dataclass
class CpuRepository:
    path: Path
    served: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Public models left out, and why."""


def _twin_ready(definition: repo.ModelDefinition, artifacts: Path) -> str | None:
    """Why this twin cannot run yet, or None."""
    if importlib.util.find_spec(definition.twin) is None:
        return f"its CPU twin ({definition.twin}) is not implemented yet"
    if definition.onnx_source and not onnx_for(artifacts, definition).exists():
        return f"{definition.onnx_source}/1/model.onnx has not been exported"
    return None


def build_cpu_repository(spec: ModelSpec, artifacts: Path, target: Path, extra_models: Path | None = None,
                         models: list[str] | None = None,
                         tracking: repo.TrackingOptions = repo.TrackingOptions(),
                         python_on_gpu: repo.TrackAOptions | None = None,
                         preprocess_decode: str = repo.PREPROCESS_DECODE) -> CpuRepository:
    """Lay out ``target`` for the CPU profile from the production configs of ``spec`` and the exported ``artifacts``.

    ``extra_models``: a folder of further model folders served as they are (the tests' deliberately wrong models).
    ``models``: the public models to serve (default: all). ``tracking``: the export's, with ``auto`` the CPU
    profile's fastest detection track. ``python_on_gpu``: on a GPU host without the NGC image (the TensorRT and DALI
    leaves still run as their twins), the Python models production places on the GPU (Track A with these options, its
    network eager: the compiled one is built by the GPU profile's export; tracks B/C's step with ``preprocess_decode``)
    run there as production runs them, and ``auto`` tracks with Track A.
    """
    profile = "gpu" if python_on_gpu else "cpu"
    track_a = repo.TrackAOptions(python_on_gpu.decode, "eager") if python_on_gpu else repo.TrackAOptions()
    definitions = repo.definitions_by_name(spec, track_a, preprocess_decode, tracking.for_profile(profile))
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    result = CpuRepository(target)
    blocked: dict[str, str] = {}
    for name, definition in definitions.items():
        if definition.twin and (why := _twin_ready(definition, artifacts)):
            blocked[name] = why
    needed: set[str] = set()
    for public in models or repo.SERVED_MODELS:
        leaves = repo.models_behind(public, definitions)
        reasons = [f"{leaf}: {blocked[leaf]}" for leaf in leaves if leaf in blocked]
        if reasons:
            result.skipped[public] = "; ".join(reasons)
            continue
        result.served.append(public)
        needed.update([public, *leaves])
    for name in sorted(needed):
        definition = definitions[name]
        model_dir = target / name
        version = model_dir / "1"
        version.mkdir(parents=True)
        on_gpu = python_on_gpu and not definition.twin and not definition.calls_leaf
        config = (None if on_gpu else cpu_configs.cpu_profile_config(definition)) or definition.config
        (model_dir / "config.pbtxt").write_text(repository_files.to_pbtxt(config))
        if definition.twin or definition.entry:
            (version / "model.py").write_text(repository_files.python_entry(definition.twin or definition.entry))
        for file, data in repo.warmup_files(definition, spec).items():
            (model_dir / "warmup").mkdir(exist_ok=True)
            (model_dir / "warmup" / file).write_bytes(data)
        artifact_dir = artifacts / name / "1"
        if artifact_dir.is_dir():
            for item in artifact_dir.iterdir():
                if item.suffix in (".pt", ".onnx") and not item.name.startswith("."):  # a dot: a staged partial
                    _link(item, version / item.name)
        if definition.onnx_source:
            # Each tier's twin runs the one End2End graph its own engine would be built from.
            _link(onnx_for(artifacts, definition), version / "model.onnx")
    for model_dir in sorted(extra_models.iterdir()) if extra_models else []:
        if (model_dir / "config.pbtxt").exists():
            if model_dir.name in definitions:
                raise ValueError(f"{model_dir} would replace the repository's own {model_dir.name}")
            (target / model_dir.name).symlink_to(model_dir.resolve())
            result.served.append(model_dir.name)
    return result
