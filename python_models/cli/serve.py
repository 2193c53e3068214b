"""Serve every track on a real Triton server: export the weights, lay out the repository, run tritonserver.

With a GPU host's NGC image this serves the GPU profile (TensorRT and DALI backends);
anywhere else it serves the CPU profile, where the TensorRT and DALI leaves are
Python-backend twins running the same exported artifacts.

With no --weights it serves yolo11n.pt, downloaded when the machine is online, and otherwise
the deterministic untrained test network, with a banner. Weights given with --weights must
resolve, or the launcher stops with the reason (--allow-untrained says otherwise).

A model that fails to load leaves the others serving: the launcher prints which public models
serve and, for each that does not, Triton's reason; /v2/health/ready answers 400 (not ready) until all do.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # Ultralytics must never pip-install at run time

from python_models.cli.paths import ROOT  # noqa: E402

from python_models.export import repository as repo  # noqa: E402
from python_models.export import repository_files  # noqa: E402
from python_models.export.weights import DEFAULT_WEIGHTS, WeightsError  # noqa: E402
from python_models.export.engine_build import EngineBuildError, build_for_gpu_profile, check_plan, engine_specs  # noqa: E402
from python_models.export.engine_build import runtime_tensorrt_version  # noqa: E402
from python_models.export.artifacts import ARTIFACTS_DIR, ExportOptions, RepositoryNotWritable, export_artifacts  # noqa: E402
from python_models.export.artifacts import read_manifest  # noqa: E402
from python_models.export.artifacts import untrained_banner  # noqa: E402
from python_models.serving.triton import (  # noqa: E402
    ADMIN_KEY_ENV,
    ADMIN_KEY_HEADER,
    RESTRICTED_APIS,
    Ports,
    admin_key,
    find_triton,
    gpu_count,
    grpc_admin_headers,
    server_command,
    server_env,
)
from python_models.serving.cpu_profile import build_cpu_repository  # noqa: E402
from python_models.serving.status import load_report, model_states, unload, wait_ready  # noqa: E402
from python_models.serving.supervisor import StubSupervisor  # noqa: E402
from python_models.contract import ModelSpec  # noqa: E402


def public_models(value: str) -> list[str]:
    models = value.split(",")
    unknown = [m for m in models if m not in repo.SERVED_MODELS]
    if unknown:
        raise argparse.ArgumentTypeError(f"not public models: {', '.join(unknown)} (choose from {', '.join(repo.SERVED_MODELS)})")
    return models


def gpu_load_list(models: list[str], artifacts: Path, served: ModelSpec,
                  tracking: repo.TrackingOptions = repo.TrackingOptions()) -> list[str]:
    """Every model the public ``models`` need, after printing why any TensorRT plan among them would not load."""
    definitions = repo.definitions_by_name(served, tracking=tracking)
    needed = sorted({name for model in models for name in (model, *repo.models_behind(model, definitions))})
    runtime = runtime_tensorrt_version()
    for spec in engine_specs(artifacts, served):
        if spec.model not in needed:
            continue
        try:
            check_plan(spec.plan, runtime) if spec.plan.exists() else None
        except EngineBuildError as exc:
            print(f"plan check: {exc}", flush=True)
        if not spec.plan.exists():
            print(f"plan check: {spec.plan} is missing: run yolo11-triton export --profile gpu", flush=True)
    return needed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help=f"a .pt file, a name Ultralytics publishes, or a .yaml network "
                                          f"(default {DEFAULT_WEIGHTS}, falling back to the untrained network offline)")
    parser.add_argument("--weights-dir", type=Path, default=ROOT / "weights", help="where weights names are looked up "
                        "and downloaded")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="serve the untrained test network when --weights cannot be resolved")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--host", default="127.0.0.1", help="address the server binds; 0.0.0.0 exposes it to the network")
    parser.add_argument("--artifacts", type=Path, default=ROOT / ARTIFACTS_DIR,
                        help="where exported models are written (default: artifacts/ of the checkout, ignored by git)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".triton", help="where the CPU-profile repository is laid out")
    parser.add_argument("--profile", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--models", type=public_models, default=list(repo.SERVED_MODELS),
                        help="comma-separated public models to serve (default: all)")
    parser.add_argument("--extra-models", type=Path, help="CPU profile: also serve the model folders in this folder")
    parser.add_argument("--python-on-gpu", action="store_true",
                        help="CPU profile on a GPU host without the NGC image: Track A and tracks B/C's preprocessing "
                             "step run on the GPU as production runs them (nvJPEG decoding, FP16; Track A's network "
                             "eager), the TensorRT and DALI leaves as their twins")
    parser.add_argument("--skip-export", action="store_true",
                        help="serve what yolo11-triton export already wrote (docker compose's export service); export nothing")
    ExportOptions.add_arguments(parser)
    args = parser.parse_args(argv)

    install = find_triton()
    profile = install.profile if args.profile == "auto" else args.profile
    artifacts = args.artifacts.resolve()
    if args.skip_export:
        manifest = read_manifest(artifacts)
        if manifest is None:
            parser.error(f"--skip-export: nothing exported in {args.artifacts} yet (run yolo11-triton export)")
    else:
        try:
            manifest = export_artifacts(args.weights or DEFAULT_WEIGHTS, artifacts, weights_dir=args.weights_dir.resolve(),
                                        allow_untrained=args.allow_untrained or args.weights is None,
                                        options=ExportOptions.from_args(args))
        except (WeightsError, RepositoryNotWritable) as exc:
            print(f"serve: {exc}", file=sys.stderr)
            return 2
    if profile == "gpu" and (visible := gpu_count()) != manifest.gpus:
        # The queue bounds of the models on every GPU were sized for the export's count: on another, they refuse
        # requests the GPUs could take, or let queues grow past what they drain.
        print(f"serve: the export sized the repository for {manifest.gpus} GPU(s) and this host has {visible}: run "
              f"yolo11-triton export --gpus {visible} (docker compose: GPUS={visible})", file=sys.stderr)
        return 2
    if manifest.untrained:
        print(untrained_banner(manifest), flush=True)
    spec = manifest.spec
    stale = repository_files.write_repository(artifacts, spec, check=True, track_a=manifest.track_a_options,
                                              preprocess_decode=manifest.preprocess_decode,
                                              tracking=manifest.tracking_options, gpus=manifest.gpus)
    if stale:  # Triton would serve configs of another model than the one exported
        print(f"serve: {len(stale)} file(s) of {artifacts} differ from what the export of {manifest.weights} writes "
              f"(first: {stale[0]}); run yolo11-triton export again", file=sys.stderr)
        return 2
    print(f"serving {spec.num_classes} classes at {spec.imgsz}x{spec.imgsz}, conf {spec.conf}, iou {spec.iou}, "
          f"max_det {spec.max_det}", flush=True)

    load = None
    if profile == "gpu":
        if args.extra_models:
            parser.error("--extra-models is for the CPU profile only")
        repository = artifacts
        if not args.skip_export:
            for line in build_for_gpu_profile(artifacts, spec, args.models, log=lambda line: print(line, flush=True),
                                              tracking=manifest.tracking_options):
                print(f"NOT BUILT {line}", flush=True)
        load = gpu_load_list(args.models, artifacts, spec, manifest.tracking_options)
        print(f"GPU profile: serving {repository} with {install.binary}", flush=True)
    else:
        layout = build_cpu_repository(spec, artifacts, args.work_dir.resolve() / "cpu_repository",
                                      args.extra_models, models=args.models, tracking=manifest.tracking_options,
                                      python_on_gpu=manifest.track_a_options if args.python_on_gpu else None,
                                      preprocess_decode=manifest.preprocess_decode)
        repository = layout.path
        print(f"CPU profile: serving {', '.join(layout.served)} from {repository}", flush=True)
        for name, why in layout.skipped.items():
            print(f"CPU profile: not serving {name}: {why}", flush=True)

    ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
    key = admin_key()
    command = server_command(install, repository, ports, args.host, key=key, profile=profile, load=load, spec=spec)
    if os.environ.get(ADMIN_KEY_ENV):
        print(f"tritonserver: {', '.join(RESTRICTED_APIS)} APIs need header {ADMIN_KEY_HEADER}: ${ADMIN_KEY_ENV}", flush=True)
    else:
        print(f"tritonserver: {', '.join(RESTRICTED_APIS)} APIs are off (set {ADMIN_KEY_ENV} to use them with "
              f"header {ADMIN_KEY_HEADER})", flush=True)
    print(f"tritonserver: HTTP {args.host}:{ports.http}, gRPC {args.host}:{ports.grpc}, metrics {args.host}:{ports.metrics}", flush=True)
    process = subprocess.Popen(command, env=server_env(install))
    supervisor: StubSupervisor | None = None

    def forward(signum, _frame):
        # Stop watching first: stubs exiting during shutdown are not deaths to recover from.
        if supervisor is not None:
            supervisor.stop()
        process.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    # Triton opens its endpoints once the start-up loading is over, failures included.
    if wait_ready(f"http://{local}:{ports.http}/v2/health/live", process):
        expected = args.models if profile == "gpu" else layout.served
        try:
            states = model_states(f"{local}:{ports.http}", key)
            served_as = "gpu" if args.python_on_gpu else profile
            lines, failed = load_report(states, expected, manifest.tracking_options.for_profile(served_as))
            # A public model that is READY over a leaf that is not (Track D over a DALI leaf that failed to load)
            # would answer every request with an error: unloaded, so that its readiness says it does not serve.
            ready = {s.name for s in states if s.state == "READY"}
            for name in failed:
                if name in ready:
                    unload(f"{local}:{ports.http}", key, name)
                    lines.append(f"unloaded {name}: a model behind it is not ready")
        except OSError as exc:  # the report is advice; the server keeps running without it
            lines = [f"could not read the model states from the repository index: {exc}"]
        for line in lines:
            print(line, flush=True)
        supervisor = StubSupervisor(process.pid, f"{local}:{ports.grpc}", grpc_admin_headers(key),
                                    log=lambda line: print(line, flush=True))
        if process.poll() is None:
            supervisor.start()
    return process.wait()


if __name__ == "__main__":
    sys.exit(main())
