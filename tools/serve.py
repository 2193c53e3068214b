"""Serve every track on a real Triton server: export the weights, lay out the repository, run tritonserver.

With a GPU host's NGC image this serves the GPU profile (TensorRT and DALI backends);
anywhere else it serves the CPU profile, where the TensorRT and DALI leaves are
Python-backend twins running the same exported artifacts.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from python_models.detector import DEFAULT_WEIGHTS  # noqa: E402
from python_models.engine_build import build_repository_engines  # noqa: E402
from python_models.export import export_artifacts, read_manifest  # noqa: E402
from python_models.supervisor import StubSupervisor  # noqa: E402
from python_models.server import (  # noqa: E402
    ADMIN_KEY_ENV,
    ADMIN_KEY_HEADER,
    RESTRICTED_APIS,
    Ports,
    admin_key,
    build_cpu_repository,
    find_triton,
    grpc_admin_headers,
    server_command,
    server_env,
    wait_ready,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="a .pt path or name Ultralytics resolves, or a .yaml network")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--host", default="127.0.0.1", help="address the server binds; 0.0.0.0 exposes it to the network")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "model_repository", help="where exported models are written")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".triton", help="where the CPU-profile repository is laid out")
    parser.add_argument("--profile", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--extra-models", type=Path, help="CPU profile: also serve the model folders in this folder")
    parser.add_argument("--skip-export", action="store_true",
                        help="serve what tools/export.py already wrote (docker compose's export service); export nothing")
    args = parser.parse_args()

    install = find_triton()
    profile = install.profile if args.profile == "auto" else args.profile
    if args.skip_export:
        manifest = read_manifest(args.artifacts.resolve())
        if manifest is None:
            parser.error(f"--skip-export: nothing exported in {args.artifacts} yet (run tools/export.py)")
    else:
        manifest = export_artifacts(args.weights, args.artifacts.resolve())
    if manifest.untrained:
        print("=" * 100, flush=True)
        print(f"!!! SERVING AN UNTRAINED NETWORK: weights {manifest.weights!r} could not be resolved offline; "
              "detections are meaningless. Pass --weights path/to/yolo11n.pt for real ones. !!!", flush=True)
        print("=" * 100, flush=True)

    if profile == "gpu":
        if args.extra_models:
            parser.error("--extra-models is for the CPU profile only")
        repository = ROOT / "model_repository"
        for line in [] if args.skip_export else build_repository_engines(args.artifacts.resolve()):
            print(line, flush=True)
        print(f"GPU profile: serving {repository} with {install.binary}", flush=True)
    else:
        layout = build_cpu_repository(ROOT / "model_repository", args.artifacts.resolve(),
                                      args.work_dir.resolve() / "cpu_repository", args.extra_models)
        repository = layout.path
        print(f"CPU profile: serving {', '.join(layout.served)} from {repository}", flush=True)
        for name, why in layout.skipped.items():
            print(f"CPU profile: not serving {name}: {why}", flush=True)

    ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
    key = admin_key()
    command = server_command(install, repository, ports, args.host, key=key)
    if os.environ.get(ADMIN_KEY_ENV):
        print(f"tritonserver: {', '.join(RESTRICTED_APIS)} APIs need header {ADMIN_KEY_HEADER}: ${ADMIN_KEY_ENV}", flush=True)
    else:
        print(f"tritonserver: {', '.join(RESTRICTED_APIS)} APIs are off (set {ADMIN_KEY_ENV} to use them with "
              f"header {ADMIN_KEY_HEADER})", flush=True)
    print(f"tritonserver: HTTP {args.host}:{ports.http}, gRPC {args.host}:{ports.grpc}, metrics {args.host}:{ports.metrics}", flush=True)
    process = subprocess.Popen(command, env=server_env(install))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: process.send_signal(signum))
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    if wait_ready(f"http://{local}:{ports.http}/v2/health/ready", process):
        StubSupervisor(process.pid, f"{local}:{ports.grpc}", grpc_admin_headers(key),
                       log=lambda line: print(line, flush=True)).start()
    return process.wait()


if __name__ == "__main__":
    sys.exit(main())
