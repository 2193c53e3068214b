"""Track A's network compiled ahead of time with AOTInductor, on the GPU host, as TensorRT plans are built there.

``torch.compile(mode="max-autotune")`` runs yolo11s at batch 64 on an H100 about twice as fast as the
hand-captured CUDA graph (6,597 against 3,112 images/s in one process), after minutes of compiling
and autotuning that no serving instance may pay at load. So the export does it once:
``torch.export`` of ``network.PaddedForward`` (uint8 letterboxed batch -> head output, the batch
dimension dynamic up to the model's max batch) and ``aoti_compile_and_package`` with max-autotune,
into ``model.pt2`` beside ``model.pt``, with ``model_pt2.json`` recording what it was built for
(torch, GPU kind, precision, size, max batch, the weights' fingerprint, the build time). Track A
loads it in seconds (parameter ``network`` ``compiled``) after checking that record
(``network.load_compiled``), and refuses to load, naming the mismatch, when it does not match.

Where no GPU is present the build is skipped with one line (the CPU profile runs the network
eagerly); on a GPU host a failed build fails the export, as a TensorRT plan that cannot be built does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from python_models.runtime.network import (COMPILED_PACKAGE, COMPILED_RECORD, PaddedForward, compiled_mismatches,
                                           compiled_target, load_network)

AUTOTUNE_CONFIGS = {"max_autotune": True}
"""Inductor's configs for the package: autotuning is what makes it faster than the CUDA graph of the eager network."""


class CompiledNetworkBuildError(RuntimeError):
    pass


def gpu_missing_reason() -> str | None:
    """Why the package cannot be built here, or None on a GPU host."""
    import torch

    if not torch.cuda.is_available():
        return "no GPU here (torch.cuda.is_available() is false)"
    return None


def build_compiled_network(version_dir: Path, precision: str, max_batch: int, size: int, device: str = "cuda:0",
                           force: bool = False, configs: dict | None = None, log=print) -> dict:
    """Compile ``version_dir/model.pt`` into ``version_dir/model.pt2`` (kept when its record matches); return the
    record. Raises ``CompiledNetworkBuildError`` with the reason when it cannot be built or does not match the
    eager network's output."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and (missing := gpu_missing_reason()):
        raise CompiledNetworkBuildError(f"cannot compile {version_dir / 'model.pt'}: {missing}")
    half = precision == "fp16"
    net = load_network(version_dir / "model.pt", device, half)
    target = compiled_target(net, device, half, max_batch, size)
    configs = dict(AUTOTUNE_CONFIGS if configs is None else configs)
    package, record_path = version_dir / COMPILED_PACKAGE, version_dir / COMPILED_RECORD
    if not force and package.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if not compiled_mismatches(record, target) and record.get("inductor_configs") == configs:
            log(f"compiled network: {package} up to date ({record['build_seconds']:.0f} s to build)")
            return record
    for module in net.modules():
        if hasattr(module, "anchors"):  # the Detect head: anchors computed in the graph, not cached per input shape
            module.dynamic = True
    module = PaddedForward(net, half).eval()
    example = torch.full((max_batch, size, size, 3), 114, dtype=torch.uint8, device=device)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    start = time.perf_counter()
    partial = package.with_name(".partial." + package.name)
    try:
        with torch.no_grad():
            exported = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
            from torch._inductor import aoti_compile_and_package, aoti_load_package

            aoti_compile_and_package(exported, package_path=str(partial), inductor_configs=dict(configs))  # it adds its own keys
            built = time.perf_counter() - start
            compiled = aoti_load_package(str(partial), run_single_threaded=True,
                                         device_index=device.index if device.index is not None else -1)
            problems = []
            for rows in sorted({1, 3, max_batch}):
                probe = torch.randint(0, 256, (rows, size, size, 3), dtype=torch.uint8, device=device)
                got, want = compiled(probe).float(), module(probe).float()
                # Autotuning picks other kernels (and TF32, like cuDNN's defaults): close, not equal. The detections
                # are compared with the eager network's by tools/gpu_benchmark.py.
                if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-2, atol=1e-2):
                    error = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
                    problems.append(f"batch {rows}: output {tuple(got.shape)}, largest difference {error:.4g} "
                                    "from the eager network")
            if problems:
                raise CompiledNetworkBuildError("the compiled network does not compute the eager one: " + "; ".join(problems))
    except CompiledNetworkBuildError:
        partial.unlink(missing_ok=True)
        raise
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise CompiledNetworkBuildError(f"AOTInductor could not compile {version_dir / 'model.pt'}: "
                                        f"{type(exc).__name__}: {exc}") from exc
    partial.replace(package)
    record = {**target, "build_seconds": round(built, 1), "inductor_configs": configs,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "cuda": torch.version.cuda}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    log(f"compiled network: built {package} in {built:.0f} s ({record['device']}, {precision}, max batch {max_batch})")
    return record


def build_track_a(artifacts: Path, spec, force: bool = False, log=print) -> list[str]:
    """Build Track A's package in a repository (``artifacts``) as its config asks (``network`` ``compiled``, at its
    precision and max batch); return why it could not be, empty when it is there and matches."""
    from python_models.build import repository as repo

    config = repo.definitions_by_name(spec)[repo.PYTORCH].config
    if config.parameters["network"].string_value != "compiled":
        return []
    name = f"{repo.PYTORCH} {COMPILED_PACKAGE}"
    missing = gpu_missing_reason()
    if missing:
        return [f"{name}: {missing}; Track A's config asks for the compiled network (parameter network compiled): "
                "build it on the GPU host (docker compose run --rm export), or serve the CPU profile"]
    try:
        build_compiled_network(artifacts / repo.PYTORCH / "1", config.parameters["precision"].string_value,
                               config.max_batch_size, spec.imgsz, force=force, log=log)
    except CompiledNetworkBuildError as exc:
        return [f"{name}: {exc}"]
    return []
