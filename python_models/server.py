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

from python_models import repository as repo
from python_models.export import onnx_for

NGC_ROOT = Path("/opt/tritonserver")
GPU_BACKENDS = ("tensorrt", "dali", "python")


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


def build_cpu_repository(source: Path, artifacts: Path, target: Path, extra_models: Path | None = None) -> CpuRepository:
    """Lay out ``target`` for the CPU profile from the production ``source`` configs and exported ``artifacts``.

    ``extra_models``: a folder of further model folders served as they are (the tests' deliberately wrong models).
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
    for public in repo.PUBLIC_MODELS:
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
        if definition.twin:
            (model_dir / "config.pbtxt").write_text(repo.to_pbtxt(repo.cpu_twin(definition)))
            (version / "model.py").write_text(repo.python_entry(definition.twin))
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


def server_command(install: TritonInstall, repository: Path, ports: Ports, host: str = "127.0.0.1",
                   key: str | None = None) -> list[str]:
    restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}={key or admin_key()}"
    return [
        str(install.binary),
        f"--model-repository={repository}",
        f"--backend-directory={install.backend_dir}",
        f"--http-address={host}", f"--http-port={ports.http}",
        f"--grpc-address={host}", f"--grpc-port={ports.grpc}",
        f"--metrics-address={host}", f"--metrics-port={ports.metrics}",
        # Explicit, with everything loaded at start: the stub supervisor reloads a model whose Python
        # stub died (python_models/supervisor.py). Only holders of the admin key can use that API.
        "--model-control-mode=explicit",
        "--load-model=*",
        f"--grpc-restricted-protocol={restricted}",
        f"--http-restricted-api={restricted}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        # Letterboxed batches are tens of MB; start the Python backend's shared memory big enough for them.
        "--backend-config=python,shm-default-byte-size=67108864",
        "--backend-config=python,shm-growth-byte-size=67108864",
    ]


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
