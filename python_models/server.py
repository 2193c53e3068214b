"""Find a real ``tritonserver``, lay out the repository for this host's profile, and build its command line.

GPU profile: the NGC image's server and backends serve ``model_repository/`` as it is.
CPU profile: the server the ``nvidia-pytriton`` wheel ships serves a runtime copy in
which each TensorRT/DALI leaf is a Python-backend twin with the same name and I/O;
every other config, ensembles included, is linked unchanged.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from python_models import contract as c
from python_models import repository as repo
from python_models.export import onnx_for

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
    module = Path(__file__).parent / "triton" / f"{definition.twin}.py"
    if not module.exists():
        return f"its CPU twin ({definition.twin}) is not implemented yet"
    if definition.onnx_source and not onnx_for(artifacts, definition).exists():
        return f"{definition.onnx_source}/1/model.onnx has not been exported"
    return None


def build_cpu_repository(source: Path, artifacts: Path, target: Path, extra_models: Path | None = None,
                         models: list[str] | None = None) -> CpuRepository:
    """Lay out ``target`` for the CPU profile from the production ``source`` configs and exported ``artifacts``.

    ``extra_models``: a folder of further model folders served as they are (the tests' deliberately wrong models).
    ``models``: the public models to serve (default: all).
    """
    definitions = repo.definitions_by_name()
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    result = CpuRepository(target)
    blocked: dict[str, str] = {}
    for name, definition in definitions.items():
        if definition.twin and (why := _twin_ready(definition, artifacts)):
            blocked[name] = why
    needed: set[str] = set()
    for public in models or repo.PUBLIC_MODELS:
        config = definitions[public].config
        leaves = repo.leaf_models(config) if config.platform == "ensemble" else []
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
        cpu_config = repo.cpu_profile_config(definition)
        if cpu_config is not None:
            (model_dir / "config.pbtxt").write_text(repo.to_pbtxt(cpu_config))
            (version / "model.py").write_text(repo.python_entry(definition.twin or definition.entry))
            if (source / name / "warmup").is_dir():
                _link(source / name / "warmup", model_dir / "warmup")
        else:
            _link(source / name / "config.pbtxt", model_dir / "config.pbtxt")
            for item in (source / name / "1").iterdir():
                if item.name not in (".gitkeep", "dali.py"):
                    _link(item, version / item.name)
        artifact_dir = artifacts / name / "1"
        if artifact_dir.is_dir():
            for item in artifact_dir.iterdir():
                if item.suffix in (".pt", ".onnx"):
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


LETTERBOXED_BYTES = 4 * 3 * c.IMAGE_SIZE * c.IMAGE_SIZE + 4 * len(c.TRANSFORM_FIELDS)
"""One letterboxed image and its transform, as they pass from a preprocessing step to an engine."""
BATCHES_IN_FLIGHT = 2
"""Per instance: the batch the engine is consuming and the one the preprocessing step is producing."""
TRITON_DEFAULT_PINNED_BYTES = 256 * 1024 * 1024


def memory_pools(definitions: list[repo.ModelDefinition] | None = None) -> tuple[int, int]:
    """(CUDA pool bytes per GPU, pinned host pool bytes) for the GPU profile.

    Triton's CUDA pool defaults to 64 MB, about 13 letterboxed images: a DALI leaf's batch
    that does not fit falls back to pinned, then pageable host memory and back to the GPU
    for the engine. The pool holds ``BATCHES_IN_FLIGHT`` full batches of every DALI
    instance. The pinned pool stages what the CPU preprocessing step hands an engine (a
    full batch per engine instance) on top of Triton's default for everything else.
    """
    definitions = definitions or repo.model_definitions()
    by_name = {d.name: d for d in definitions}
    cuda = pinned = 0
    for definition in definitions:
        config = definition.config
        batch_bytes = config.max_batch_size * LETTERBOXED_BYTES * sum(g.count for g in config.instance_group)
        if config.backend == "dali":
            cuda += BATCHES_IN_FLIGHT * batch_bytes
        elif config.platform == "tensorrt_plan" and _fed_from_host(config.name, by_name):
            pinned += batch_bytes
    return cuda, TRITON_DEFAULT_PINNED_BYTES + pinned


def _fed_from_host(engine: str, by_name: dict[str, repo.ModelDefinition]) -> bool:
    """True when a CPU (Python) step produces the engine's input in some ensemble."""
    for definition in by_name.values():
        steps = list(definition.config.ensemble_scheduling.step)
        for before, step in zip(steps, steps[1:]):
            if step.model_name == engine and by_name[before.model_name].config.backend == "python":
                return True
    return False


def server_command(install: TritonInstall, repository: Path, ports: Ports, host: str = "127.0.0.1",
                   key: str | None = None, profile: str = "cpu", load: list[str] | None = None) -> list[str]:
    """``load``: the models to load at start (default: every model in the repository)."""
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
        cuda, pinned = memory_pools()
        command += [f"--cuda-memory-pool-byte-size={gpu}:{cuda}" for gpu in range(gpu_count())]
        command.append(f"--pinned-memory-pool-byte-size={pinned}")
    return command


def gpu_count() -> int:
    """GPUs visible to this process (``CUDA_VISIBLE_DEVICES``, else nvidia-smi's list; 1 when it cannot be asked)."""
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "all"):
        return max(1, len([d for d in visible.split(",") if d.strip()]))
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 1
    return max(1, sum(1 for line in out.splitlines() if line.startswith("GPU ")))


def server_env(install: TritonInstall, stub_python_bin: Path | None = None) -> dict[str, str]:
    """The Python backend stub imports packages from the first ``python3`` on PATH: make it this environment's
    (or ``stub_python_bin``'s, e.g. a numpy 1.x environment on a host whose own numpy is 2.x)."""
    env = dict(os.environ)
    env["PATH"] = f"{stub_python_bin or Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if install.libs is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [env.get("LD_LIBRARY_PATH"), str(install.libs)]))
    env.setdefault("YOLO_OFFLINE", "1")
    return env


def wait_ready(url: str, process, timeout_s: float = 1800) -> bool:
    """Poll ``url`` until it answers 200 (True), or until ``process`` exits or time runs out (False)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


@dataclass(frozen=True)
class ModelState:
    name: str
    state: str
    reason: str


def model_states(http_url: str, key: str) -> list[ModelState]:
    """Every model the server knows, with its state and Triton's reason (the repository index, behind the key)."""
    import json
    import urllib.request

    request = urllib.request.Request(f"http://{http_url}/v2/repository/index", data=b"{}", method="POST",
                                     headers={ADMIN_KEY_HEADER: key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        index = json.loads(response.read())
    return [ModelState(m["name"], m.get("state", "UNKNOWN"), m.get("reason", "")) for m in index]


def load_report(states: list[ModelState], expected: list[str]) -> tuple[list[str], list[str]]:
    """(lines to print, public models not serving) once the start-up loading is over."""
    by_name = {s.name: s for s in states}
    definitions = repo.definitions_by_name()
    lines, failed = [], []
    for name in expected:
        state = by_name.get(name)
        if state and state.state == "READY":
            continue
        failed.append(name)
        leaves = repo.leaf_models(definitions[name].config) if name in definitions else []
        causes = [f"{leaf}: {by_name[leaf].state} {by_name[leaf].reason}".strip() for leaf in leaves
                  if leaf in by_name and by_name[leaf].state != "READY"]
        own = f"{state.state} {state.reason}".strip() if state else "not loaded"
        lines.append(f"NOT SERVING {name}: {own}" + (f" (because {'; '.join(causes)})" if causes else ""))
    ready = [name for name in expected if name not in failed]
    lines.insert(0, f"serving {len(ready)} of {len(expected)} public models: {', '.join(ready) or 'none'}")
    return lines, failed


def process_tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (launcher, tritonserver, Python stubs)."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total
