"""What bounds tracks B and C on the host's CPU: their preprocessing step, served by Triton, measured alone.

    .venv/bin/yolo11-triton bench preprocess [--decode cpu,gpu] [--decode-threads 1,0] [--instances 0,4]
        [--concurrency 16,64] [--images DIR] [--stub-python-bin /path/to/numpy1-env/bin] [--out reports/preprocess]

Serves ``yolo11_preprocess`` as exported (in each ``--decode`` mode), followed by a step that only consumes
its output (``yolo11_consume``), as the ensemble ``yolo11_preprocess_only``: perf_analyzer's requests carry the
encoded images in and a few bytes out, so the figure is the step's own, not gRPC carrying 4.9 MB per image back.
One server per ``--decode`` mode (the step's parameter: ``cpu``, four KIND_CPU instances; ``gpu`` or
``nvimgcodec``, KIND_GPU instances decoding JPEGs with nvJPEG or the hardware decoder, a GPU host only, with the GPU
profile's memory pools) and ``--decode-threads`` value (1 is one thread per
instance, the behaviour before it had a pool; 0 shares twice the cores out over the instances) and ``--instances``
count (0: as exported; another count replaces the step's instance count). Prints and writes images/s, latency and
where Triton spent the time (queue / compute per request, average batch) for each setting and concurrency.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from python_models.cli.paths import ROOT  # noqa: E402
os.environ.setdefault("YOLO_OFFLINE", "1")

from python_models.export import repository as repo  # noqa: E402
from python_models.export import repository_files  # noqa: E402
from python_models.client import image_files  # noqa: E402
from python_models.client import perf_analyzer as pa  # noqa: E402
from python_models.client.report import PerfAnalyzerFailed, measure  # noqa: E402
from python_models.runtime.threads import available_cores, decode_threads  # noqa: E402
from python_models.serving.status import wait_ready  # noqa: E402
from python_models.serving.triton import Ports, find_triton, server_command, server_env  # noqa: E402


def layout(root: Path, threads: int, decode: str = "cpu", instances: int = 0) -> Path:
    """The three models of ``preprocess_only_definitions``, the step's ``decode_threads`` set to ``threads`` (and its
    instance count to ``instances`` unless 0)."""
    for definition in repo.preprocess_only_definitions(repo.default_spec(), decode):
        config = type(definition.config)()
        config.CopyFrom(definition.config)
        if definition.name == repo.PREPROCESS:
            config.parameters["decode_threads"].string_value = str(threads)
            if instances:
                config.instance_group[0].count = instances
        folder = root / definition.name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(repository_files.to_pbtxt(config))
        for name, text in repository_files.version_files(definition).items():
            (folder / "1" / name).write_text(text)
    return root


def step_instances(decode: str, instances: int = 0) -> int:
    """The step's instance count served: ``instances``, or as exported for ``decode`` when 0."""
    return instances or repo.preprocess_definition(repo.default_spec(), decode).config.instance_group[0].count


def resolved_threads(threads: int, decode: str, instances: int) -> int:
    """Decode threads per instance of the step served with ``instances`` instances (``step_instances``)."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = repo.preprocess_definition(repo.default_spec(), decode).config
    groups = [{"kind": mc.ModelInstanceGroup.Kind.Name(g.kind), "count": instances} for g in config.instance_group]
    gpus = 0
    if decode != "cpu":
        from python_models.serving.triton import gpu_count

        gpus = gpu_count()
    return decode_threads(threads, available_cores(), groups, gpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decode", default="cpu", help="the step's decode modes, one server each: cpu, gpu, nvimgcodec")
    parser.add_argument("--decode-threads", default="1,0", help="values of the step's decode_threads, one server each")
    parser.add_argument("--instances", default="0", help="the step's instance counts, one server each (0: as exported)")
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--images", type=Path, help="a folder of JPEG/PNG (default: the ultralytics sample images)")
    parser.add_argument("--measurement-ms", type=int, default=4000)
    parser.add_argument("--stability-percent", type=int, default=30)
    parser.add_argument("--stub-python-bin", type=Path, help="bin/ of the environment the Python backend stub runs in")
    parser.add_argument("--grpc-port", type=int, default=18301)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "preprocess")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    input_data = pa.write_input_data(image_files(args.images), args.out / "perf_input.json")
    binary, install = pa.find_binary(), find_triton()
    ports = Ports(args.grpc_port - 1, args.grpc_port, args.grpc_port + 1)
    grpc_url, metrics_url = f"127.0.0.1:{ports.grpc}", f"http://127.0.0.1:{ports.metrics}/metrics"
    rows = []
    settings = [(mode, int(t), int(n)) for mode in args.decode.split(",") for t in args.decode_threads.split(",")
                for n in args.instances.split(",")]
    for decode, threads, asked in settings:
        instances = step_instances(decode, asked)
        name = (f"threads{threads}" if decode == "cpu" else f"{decode}_threads{threads}") + (f"_x{asked}" if asked else "")
        repository = layout(args.out / name / "repository", threads, decode, asked)
        log = open(args.out / name / "server.log", "wb")
        # The GPU modes hand their batches on in Triton's CUDA pool: sized as the GPU profile sizes it (with the
        # default 64 MB, outputs fell back to pinned host memory, results/h200_issue25/README.md).
        profile = "cpu" if decode == "cpu" else "gpu"
        server = subprocess.Popen(server_command(install, repository, ports, profile=profile, spec=repo.default_spec()),
                                  env=server_env(install, args.stub_python_bin), stdout=log, stderr=subprocess.STDOUT)
        try:
            if not wait_ready(f"http://127.0.0.1:{ports.http}/v2/health/ready", server, timeout_s=300):
                raise SystemExit(f"tritonserver did not become ready: see {log.name}")
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                csv_path = args.out / name / f"c{concurrency}.csv"
                command = pa.command(binary, repo.PREPROCESS_ONLY, grpc_url, input_data, concurrency, csv_path,
                                     args.measurement_ms, max_trials=8, stability_percent=args.stability_percent)
                try:
                    run = measure(command, csv_path, repo.PREPROCESS_ONLY, metrics_url, [repo.PREPROCESS])
                except PerfAnalyzerFailed as exc:
                    rows.append({"decode": decode, "instances": instances, "decode_threads": threads,
                                 "concurrency": concurrency, "error": str(exc)[-300:]})
                    continue
                step = run.server[repo.PREPROCESS]
                rows.append({"decode": decode, "instances": instances, "decode_threads": threads,
                             "threads_per_instance": resolved_threads(threads, decode, instances),
                             "concurrency": concurrency, "images_per_s": round(run.perf.throughput, 1),
                             "p50_ms": round(run.perf.p50_ms, 1), "p99_ms": round(run.perf.p99_ms, 1),
                             "avg_batch": round(step.avg_batch, 1), "queue_ms": round(step.queue_ms, 1),
                             "compute_ms": round(step.compute_ms, 1)})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    lines = ["| decode | instances | decode_threads (per instance) | concurrency | images/s | p50 ms | p99 ms "
             "| avg batch | queue / compute ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['decode']} | {r['instances']} | {r['decode_threads']} ({r.get('threads_per_instance', '')}) | {r['concurrency']} | " + (
            f"{r['images_per_s']:,.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['avg_batch']} | "
            f"{r['queue_ms']} / {r['compute_ms']} |" if "error" not in r else f"failed: {r['error'][:120]} |||||"))
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.processor() or platform.machine(),
            "cores": available_cores(), "command": " ".join(["python3", *sys.argv])}
    (args.out / "preprocess.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.out / "preprocess.md").write_text(f"# Tracks B and C: the preprocessing step alone\n\n{meta}\n\n"
                                            + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
