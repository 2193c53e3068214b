"""Benchmark public models with perf_analyzer over gRPC on real images, and write one report.

    .venv/bin/yolo11-triton bench sweep [--models yolo11_pytorch,yolo11_trt] [--concurrency 1,4,16]
                                        [--images DIR] [--out reports/NAME]

Against a running server (yolo11-triton serve). For every model and concurrency level it
scrapes Triton's metrics, runs perf_analyzer, scrapes again, and records throughput,
p50/p95/p99 latency and, per leaf model, average batch size, queue and compute time
and failures. The report directory gets report.json, report.md, throughput.png and
latency_p95.png.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from python_models.cli.paths import ROOT  # noqa: E402
from python_models.cli.options import add_server_urls, metrics_endpoint  # noqa: E402
os.environ.setdefault("YOLO_OFFLINE", "1")

from python_models.client import perf_analyzer as pa  # noqa: E402
from python_models.export import repository as repo  # noqa: E402
from python_models.client import image_files, ready_public_models  # noqa: E402
from python_models.client.report import PerfAnalyzerFailed, Run, measure, write_report  # noqa: E402

def chosen_models(grpc_url: str, requested: str | None) -> list[str]:
    """The comma-separated public models asked for, else every public model the server has ready."""
    if requested:
        models = requested.split(",")
    else:
        import tritonclient.grpc as grpcclient

        models = ready_public_models(grpcclient.InferenceServerClient(grpc_url))
    unknown = [m for m in models if m not in repo.PUBLIC_MODELS]
    if unknown or not models:
        raise SystemExit(f"not public models: {unknown}" if unknown else "the server has no public model ready")
    return models


def served_profile(grpc_url: str, models: list[str]) -> str:
    """"cpu" when the server runs the CPU twins (their configs say what they stand in for), else "gpu"."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    leaves = {leaf for model in models for leaf in models_of(model)}
    twins = [leaf for leaf in leaves if "twin_of" in client.get_model_config(leaf, as_json=True)["config"].get("parameters", {})]
    return f"cpu (Python twins for {len(twins)} TensorRT/DALI leaves)" if twins else "gpu"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def models_of(public: str) -> list[str]:
    definitions = repo.definitions_by_name(repo.default_spec())  # the steps are the same for every spec
    return [public, *(repo.request_path(public, definitions) if definitions[public].config.platform == "ensemble"
                      else [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_urls(parser, metrics=True)
    parser.add_argument("--models", help="comma-separated public models (default: every one the server has ready)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated concurrency levels")
    parser.add_argument("--images", type=Path, help="a directory of JPEG/PNG files or one file (default: the ultralytics sample images)")
    parser.add_argument("--measurement-ms", type=int, default=4000, help="perf_analyzer measurement window")
    parser.add_argument("--max-trials", type=int, default=6, help="perf_analyzer windows before it gives up stabilising")
    parser.add_argument("--stability-percent", type=int, default=25,
                        help="perf_analyzer's allowed spread between its last 3 windows; raise it on a busy machine "
                             "(Triton's own CI uses 9999, i.e. accept the first 3 windows)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / time.strftime("benchmark-%Y%m%d-%H%M%S"))
    parser.add_argument("--perf-analyzer", type=Path, help="binary (default: .venv/bin/perf_analyzer, then PATH)")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    binary = args.perf_analyzer or pa.find_binary()
    models = chosen_models(args.grpc_url, args.models)
    levels = [int(c) for c in args.concurrency.split(",")]
    try:
        images = image_files(args.images)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    args.out.mkdir(parents=True, exist_ok=True)
    input_data = pa.write_input_data(images, args.out / "perf_input.json")
    console.print(f"{len(models)} models x concurrency {levels}, {len(images)} images, into {args.out}")

    runs: list[Run] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("perf_analyzer", total=len(models) * len(levels))
        for model in models:
            for concurrency in levels:
                progress.update(task, description=f"{model} @ {concurrency}")
                csv_path = args.out / "perf" / f"{model}_c{concurrency}.csv"
                cmd = pa.command(binary, model, args.grpc_url, input_data, concurrency, csv_path, args.measurement_ms,
                                 max_trials=args.max_trials, stability_percent=args.stability_percent)
                try:
                    runs.append(measure(cmd, csv_path, model, metrics_endpoint(args.metrics_url), models_of(model)))
                except PerfAnalyzerFailed as exc:
                    hint = ("\n(no stable measurement: raise --measurement-ms or --stability-percent)"
                            if "stable measurement" in str(exc) else "")
                    raise SystemExit(f"perf_analyzer failed on {model} at {concurrency}:\n{exc}{hint}") from None
                progress.advance(task)

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.platform()}",
        "profile": served_profile(args.grpc_url, models),
        "images": [p.name for p in images],
        "perf_analyzer": subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip(),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
    }
    paths = write_report(args.out, runs, meta)
    console.print((args.out / "report.md").read_text())
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
