"""Find a real ``tritonserver`` and build its command line and environment for this host's profile.

GPU profile: the NGC image's server and backends serve ``model_repository/`` as it is.
CPU profile: the server the ``nvidia-pytriton`` wheel ships serves the layout of
``serving.cpu_profile``. Both run with the same settings: restricted APIs behind the admin
key, explicit model control for the stub supervisor, strict readiness without exiting on a
failed model, and in the GPU profile memory pools sized from the tiers.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from python_models import contract as c
from python_models.export import repository as repo
from python_models.export.deployment import gpu_count  # noqa: F401 - where the server counts its GPUs

NGC_ROOT = Path("/opt/tritonserver")
GPU_BACKENDS = ("tensorrt", "dali", "python")


def ngc_image() -> bool:
    """True inside the NGC Triton image (its server and its TensorRT, DALI and Python backends)."""
    backends = NGC_ROOT / "backends"
    return (NGC_ROOT / "bin" / "tritonserver").exists() and all((backends / b).is_dir() for b in GPU_BACKENDS)


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_dir: Path
    libs: Path | None = None

    @property
    def profile(self) -> str:
        have = {p.name for p in self.backend_dir.iterdir() if p.is_dir()}
        return "gpu" if all(b in have for b in GPU_BACKENDS) else "cpu"


def find_triton() -> TritonInstall:
    """The NGC image's server when present, else the one inside the ``nvidia-pytriton`` wheel."""
    if (NGC_ROOT / "bin" / "tritonserver").exists():
        return TritonInstall(NGC_ROOT / "bin" / "tritonserver", NGC_ROOT / "backends")
    import importlib.util

    # Located, not imported: the server binary is all we use, and pytriton's own imports need more packages.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no tritonserver: install the project (pip install -e .), which brings nvidia-pytriton")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    backends = root / "backends"
    # The stub's RPATH is relative to the backend folder inside the wheel, so it must be copied there.
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    target = backends / "python" / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    if not target.exists() or target.stat().st_size != stub.stat().st_size:
        shutil.copy2(stub, target)
    return TritonInstall(root / "bin" / "tritonserver", backends, root.parent.parent / "nvidia_pytriton.libs")


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
"""APIs that change what the server loads, reads or logs: only callers holding the admin key may use them."""
ADMIN_KEY_HEADER = "triton-admin-key"
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"


def grpc_admin_headers(key: str) -> dict[str, str]:
    """gRPC metadata carrying the key: Triton expects the header name prefixed with ``triton-grpc-protocol-``."""
    return {f"triton-grpc-protocol-{ADMIN_KEY_HEADER}": key}


def admin_key() -> str:
    """``$TRITON_ADMIN_KEY``, or a random key nobody knows, which leaves the restricted APIs off."""
    import secrets

    return os.environ.get(ADMIN_KEY_ENV) or secrets.token_urlsafe(32)


def letterboxed_bytes(spec: c.ModelSpec) -> int:
    """One letterboxed image and its transform, as they pass from a preprocessing step to an engine."""
    image = spec.letterboxed_spec()
    return int(np.prod(image.dims)) * image.dtype.itemsize + c.TRANSFORM_SPEC.dtype.itemsize * len(c.TRANSFORM_FIELDS)


BATCHES_IN_FLIGHT = 2
"""Per DALI leaf instance: the batch its guard is handing on and the one the leaf is producing."""
TRITON_DEFAULT_PINNED_BYTES = 256 * 1024 * 1024
TRITON_DEFAULT_CUDA_POOL_BYTES = 64 * 1024 * 1024


def memory_pools(spec: c.ModelSpec) -> tuple[int, int]:
    """(CUDA pool bytes per GPU, pinned host pool bytes) for the GPU profile.

    Triton's CUDA pool defaults to 64 MB: what does not fit falls back to plain CUDA allocations (BLS
    outputs) or to pinned, then pageable host memory and back to the GPU for the engine (ensemble
    tensors). Track D's letterboxed batches live in it twice: the DALI leaf answers its guard
    through BLS into this pool (``BATCHES_IN_FLIGHT`` full batches per leaf instance), and the
    guard's response, which the ensemble hands the engine, is a second copy (a full batch per
    guard instance). Tracks B and C's preprocessing step hands each engine a full batch per engine
    instance, from the host (its cpu mode: the pinned pool) or from its GPU (gpu mode: the CUDA pool);
    both pools hold it, whichever mode the export chose. Triton's default pinned pool stays for the rest.
    """
    definitions = repo.model_definitions(spec)
    by_name = {d.name: d for d in definitions}
    cuda = pinned = 0
    for definition in definitions:
        config = definition.config
        batch_bytes = config.max_batch_size * letterboxed_bytes(spec) * sum(g.count for g in config.instance_group)
        if config.backend == "dali":
            cuda += BATCHES_IN_FLIGHT * batch_bytes
        elif definition.calls_leaf:
            cuda += batch_bytes
        elif config.platform == "tensorrt_plan" and _fed_by_python(config.name, by_name):
            pinned += batch_bytes
            cuda += batch_bytes
    return cuda, TRITON_DEFAULT_PINNED_BYTES + pinned


POOLS_BEGIN = "<!-- pools: generated by yolo11-triton dev gen-configs from python_models/serving/triton.py -->"
POOLS_END = "<!-- end of pools -->"


def memory_pools_table(spec: c.ModelSpec) -> str:
    """docs/production.md's statement of the GPU profile's memory pools, from ``memory_pools`` for ``spec``."""
    image = letterboxed_bytes(spec)
    cuda, pinned = memory_pools(spec)
    mib = 2**20
    tiers = ", ".join(f"{t.name} {t.max_batch_size * image / mib:,.0f} MiB" for t in c.DALI_TIERS)
    return "\n".join([
        POOLS_BEGIN, "",
        "| pool (`yolo11-triton serve --profile gpu` sets it) | size | holds |", "|---|---|---|",
        f"| CUDA, per GPU (`--cuda-memory-pool-byte-size`) | {cuda / mib:,.0f} MiB | Track D's letterboxed batches "
        f"({image / mib:.2f} MiB an image at {spec.imgsz}; a full batch of each tier: {tiers}): "
        f"{BATCHES_IN_FLIGHT} per DALI leaf instance, which answers its guard into this pool, and one per guard "
        f"instance, handed on to the engine; what tracks B and C's preprocessing step hands the engines from the GPU "
        f"(`--preprocess-decode gpu`, a full batch per engine instance). Triton's default, "
        f"{TRITON_DEFAULT_CUDA_POOL_BYTES // mib} MiB, holds {TRITON_DEFAULT_CUDA_POOL_BYTES // image} images |",
        f"| pinned host (`--pinned-memory-pool-byte-size`) | {pinned / mib:,.0f} MiB | what tracks B and C's step "
        f"hands the engines from the host (`--preprocess-decode cpu`, a full batch per engine instance), on top of "
        f"Triton's default {TRITON_DEFAULT_PINNED_BYTES // mib} MiB |",
        "", POOLS_END, ""])


def _fed_by_python(engine: str, by_name: dict[str, repo.ModelDefinition]) -> bool:
    """True when a Python step produces the engine's input in some ensemble (not a guard handing on what the
    DALI leaf it calls left on the GPU)."""
    for definition in by_name.values():
        steps = list(definition.config.ensemble_scheduling.step)
        for before, step in zip(steps, steps[1:]):
            producer = by_name[before.model_name]
            if step.model_name == engine and producer.config.backend == "python" and not producer.calls:
                return True
    return False


def server_command(install: TritonInstall, repository: Path, ports: Ports, host: str = "127.0.0.1",
                   key: str | None = None, profile: str = "cpu", load: list[str] | None = None,
                   spec: c.ModelSpec | None = None) -> list[str]:
    """``load``: the models to load at start (default: every model in the repository). ``spec``: the exported
    model's, which sizes the GPU profile's memory pools (required there)."""
    restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}={key or admin_key()}"
    command = [
        str(install.binary),
        f"--model-repository={repository}",
        f"--backend-directory={install.backend_dir}",
        f"--http-address={host}", f"--http-port={ports.http}",
        f"--grpc-address={host}", f"--grpc-port={ports.grpc}",
        f"--metrics-address={host}", f"--metrics-port={ports.metrics}",
        # Explicit, with everything loaded at start: the stub supervisor reloads a model whose Python
        # stub died (python_models/supervisor.py). Only holders of the admin key can use that API.
        "--model-control-mode=explicit",
        *[f"--load-model={name}" for name in (load or ["*"])],
        f"--grpc-restricted-protocol={restricted}",
        f"--http-restricted-api={restricted}",
        # Ready means every model asked for is ready; a model that fails to load leaves the others
        # serving (per-model readiness: /v2/models/<name>/ready) and the launcher names it.
        "--strict-readiness=true",
        "--exit-on-error=false",
        # Letterboxed batches are tens of MB; start the Python backend's shared memory big enough for them.
        "--backend-config=python,shm-default-byte-size=67108864",
        "--backend-config=python,shm-growth-byte-size=67108864",
    ]
    if profile == "gpu":
        if spec is None:
            raise ValueError("the GPU profile's memory pools are sized from the exported model's spec")
        cuda, pinned = memory_pools(spec)
        command += [f"--cuda-memory-pool-byte-size={gpu}:{cuda}" for gpu in range(gpu_count())]
        command.append(f"--pinned-memory-pool-byte-size={pinned}")
    return command


def server_env(install: TritonInstall, stub_python_bin: Path | None = None) -> dict[str, str]:
    """The Python backend stub imports packages from the first ``python3`` on PATH: make it this environment's
    (or ``stub_python_bin``'s, e.g. a numpy 1.x environment on a host whose own numpy is 2.x)."""
    env = dict(os.environ)
    env["PATH"] = f"{stub_python_bin or Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if install.libs is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [env.get("LD_LIBRARY_PATH"), str(install.libs)]))
    env.setdefault("YOLO_OFFLINE", "1")
    return env
