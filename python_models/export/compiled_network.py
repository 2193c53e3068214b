"""Track A's network compiled ahead of time, on the GPU host, as TensorRT plans are built there.

``torch.compile(mode="max-autotune")`` runs yolo11s at batch 64 on an H100 about twice as fast as the
hand-captured CUDA graph (6,597 against 3,112 images/s in one process), after minutes of compiling
and autotuning that no serving instance may pay at load. So the export pays them once: it compiles
``network.compiled_forward`` (uint8 letterboxed batch of the model's max batch size -> head output;
smaller batches run padded), checks it against the eager network, and saves inductor's caches (generated
code, autotuning choices, compiled kernels: ``torch.compiler.save_cache_artifacts``) as
``model.inductor_cache`` beside ``model.pt``, with ``model_compiled.json`` recording what they were
built for (torch, GPU kind, precision, size, max batch, the weights' fingerprint, the build time).
Each Track A instance (parameter ``network`` ``compiled``) checks that record, loads the caches and
compiles from them in seconds (``network.load_compiled``), and refuses to load, naming the reason,
when the record does not match or the caches did not hold the graph.

Why not an AOTInductor package (``torch._inductor.aoti_compile_and_package`` / ``aoti_load_package``)?
It was built first: on the H100 host (torch 2.11.0+cu130, Python 3.12) every package, down to a
two-convolution network without autotuning, crashed the loading process (SIGSEGV in
``AOTIModelPackageLoader``), while torch.compile from caches runs there (repro: yolo11-triton check aoti).

Where no GPU is present the build is skipped with one line (the CPU profile runs the network
eagerly); on a GPU host a failed build fails the export, as a TensorRT plan that cannot be built does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

from python_models.runtime.network import (COMPILE_CACHE, COMPILED_RECORD, PaddedForward, compiled_forward,
                                           compiled_mismatches, compiled_target, load_network)


class CompiledNetworkBuildError(RuntimeError):
    pass


def sample_batch(rows: int, size: int, device):
    """bus.jpg and zidane.jpg (from the ultralytics wheel) letterboxed, alternating: a batch with detections."""
    import torch
    from ultralytics.utils import ASSETS

    from python_models.runtime.decode import decode
    from python_models.runtime.letterbox import letterbox_padded

    images = [letterbox_padded(decode((ASSETS / name).read_bytes()), size)[0] for name in ("bus.jpg", "zidane.jpg")]
    return torch.stack([torch.from_numpy(images[i % 2]) for i in range(rows)]).to(device)


BOX_TOLERANCE_PX = 2.0
BOX_TOLERANCE_RELATIVE = 1e-2
SCORE_TOLERANCE = 0.03
"""How far the compiled head output may be from the eager one on the sample images: autotuned kernels (and TF32,
like cuDNN's defaults) give close, not equal, outputs. An element-wise check at 1% was seen to fail on the H100
(0.75 apart, on random pixels; these real images were not measured there), and the served compiled network then
passed parity with the predictor (IoU 0.95, scores 0.03). A wrong input path or a broken kernel moves scores by
tenths and boxes by many pixels."""


def head_differences(got, want) -> list[str]:
    """Why the compiled network's head output ``[B, 4 + classes, anchors]`` is not the eager network's (empty: it is)."""
    if tuple(got.shape) != tuple(want.shape):
        return [f"output {tuple(got.shape)}, eager {tuple(want.shape)}"]
    got, want = got.float(), want.float()
    problems = []
    box_error = ((got[:, :4] - want[:, :4]).abs() - BOX_TOLERANCE_RELATIVE * want[:, :4].abs()).max().item()
    if box_error > BOX_TOLERANCE_PX:
        problems.append(f"boxes {box_error:.3g} px beyond the tolerance")
    score_error = (got[:, 4:] - want[:, 4:]).abs().max().item()
    if score_error > SCORE_TOLERANCE:
        problems.append(f"class scores up to {score_error:.3g} apart")
    return problems


_EXTENSION = """#include <Python.h>
static struct PyModuleDef probe = {PyModuleDef_HEAD_INIT, "probe"};
PyMODINIT_FUNC PyInit_probe(void) { return PyModule_Create(&probe); }
"""


def jit_toolchain_problem() -> str | None:
    """Why the compiled network could not run in this environment, or None.

    Its kernels are Triton's, and every process that loads them (the export, each Track A instance) builds a small
    C launcher, a Python extension, with the compiler Triton picks (``$CC``, else gcc, else clang) against the
    Python headers. The NGC image ships clang and libpython3-dev; an image without either would fail at the first
    instance's load. Checked here by building such an extension the way Triton does (yolo11-triton check image, the
    export)."""
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
    fix = "install one in the image, or export with --track-a-network eager"
    if not compiler:
        return f"no C compiler ($CC unset, neither gcc nor clang on PATH): Triton builds a launcher per kernel; {fix}"
    scheme = sysconfig.get_default_scheme()
    include = Path(sysconfig.get_paths(scheme="posix_prefix" if scheme == "posix_local" else scheme)["include"])
    if not (include / "Python.h").exists():
        return f"no Python.h in {include} (the Python headers, e.g. libpython3-dev): Triton's launchers need them; {fix}"
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "probe.c"
        source.write_text(_EXTENSION)
        try:
            built = subprocess.run([compiler, str(source), "-O1", "-shared", "-fPIC", f"-I{include}", "-o",
                                    str(Path(folder) / "probe.so")], capture_output=True, text=True, timeout=120)
        except OSError as exc:
            return f"C compiler {compiler} cannot run ({exc}); {fix}"
        if built.returncode:
            return f"{compiler} could not build a Python extension as Triton does: {built.stderr.strip()[-400:]}; {fix}"
    return None


def gpu_missing_reason() -> str | None:
    """Why the compiled network cannot be built here, or None on a GPU host."""
    import torch

    if not torch.cuda.is_available():
        return "no GPU here (torch.cuda.is_available() is false)"
    return None


def build_compiled_network(version_dir: Path, precision: str, max_batch: int, size: int, device: str = "cuda:0",
                           force: bool = False, log=print) -> dict:
    """Compile ``version_dir/model.pt`` and save inductor's caches for it (kept when their record matches); return
    the record. Raises ``CompiledNetworkBuildError`` with the reason when it cannot be built or does not compute
    what the eager network computes."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and (missing := gpu_missing_reason()):
        raise CompiledNetworkBuildError(f"cannot compile {version_dir / 'model.pt'}: {missing}")
    half = precision == "fp16"
    net = load_network(version_dir / "model.pt", device, half)
    target = compiled_target(net, device, half, max_batch, size)
    cache, record_path = version_dir / COMPILE_CACHE, version_dir / COMPILED_RECORD
    if not force and cache.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if not compiled_mismatches(record, target):
            log(f"compiled network: {cache} up to date ({record['build_seconds']:.0f} s to build)")
            return record
    eager = PaddedForward(net, half).eval()
    start = time.perf_counter()
    try:
        torch.compiler.reset()
        forward = compiled_forward(net, half, max_batch, size, device)
        problems = []
        with torch.no_grad():
            samples = sample_batch(max_batch, size, device)
            for rows in sorted({1, max_batch // 2, max_batch}):  # smaller batches run padded to the compiled size
                problems += [f"batch {rows}: {p}" for p in head_differences(forward(samples[:rows]),
                                                                            eager(samples[:rows]))]
        if problems:
            raise CompiledNetworkBuildError("the compiled network does not compute the eager one: " + "; ".join(problems))
        built = time.perf_counter() - start
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            raise CompiledNetworkBuildError("inductor saved no compiled graph to cache (is its FX graph cache off? "
                                            "TORCHINDUCTOR_FX_GRAPH_CACHE=0 in the environment)")
    except CompiledNetworkBuildError:
        raise
    except Exception as exc:
        raise CompiledNetworkBuildError(f"torch.compile could not compile {version_dir / 'model.pt'}: "
                                        f"{type(exc).__name__}: {exc}") from exc
    partial = cache.with_name(".partial." + cache.name)
    partial.write_bytes(saved[0])
    partial.replace(cache)
    record = {**target, "build_seconds": round(built, 1), "cache_bytes": len(saved[0]),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "cuda": torch.version.cuda}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    log(f"compiled network: built {cache} in {built:.0f} s ({record['device']}, {precision}, max batch {max_batch})")
    return record


def build_track_a(artifacts: Path, spec, force: bool = False, log=print) -> list[str]:
    """Build Track A's compiled network in a repository (``artifacts``) as the config the export wrote there asks
    (``network`` ``compiled``, at its precision and max batch); return why it could not be, empty when it is there
    and matches."""
    from python_models.export import repository as repo
    from python_models.export import repository_files

    config_path = artifacts / repo.PYTORCH / "config.pbtxt"
    if not config_path.exists():
        return [f"{repo.PYTORCH}: no {config_path} (run yolo11-triton export)"]
    config = repository_files.parse_pbtxt(config_path.read_text())
    if config.parameters["network"].string_value != "compiled":
        return []
    name = f"{repo.PYTORCH} {COMPILE_CACHE}"
    if missing := gpu_missing_reason():
        return [f"{name}: {missing}; Track A's config asks for the compiled network (parameter network compiled): "
                "build it on the GPU host (docker compose run --rm export), export with --track-a-network eager, "
                "or serve the CPU profile"]
    if problem := jit_toolchain_problem():
        return [f"{name}: {problem}"]
    try:
        build_compiled_network(artifacts / repo.PYTORCH / "1", config.parameters["precision"].string_value,
                               config.max_batch_size, spec.imgsz, force=force, log=log)
    except CompiledNetworkBuildError as exc:
        return [f"{name}: {exc}"]
    return []
