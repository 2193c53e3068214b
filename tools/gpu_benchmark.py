"""Track A and the DALI pipeline on a GPU host, measured and checked; writes the benchmark report format.

    python3 tools/gpu_benchmark.py --weights yolo11s.pt [--precision fp16] [--instances 2]
        [--concurrency 1,16,64,128,256] [--stub-python-bin /path/to/numpy1-env/bin] [--out results/NAME]

For a GPU host without TensorRT or the Triton TensorRT/DALI backends (the embedded
tritonserver of the nvidia-pytriton wheel serves Python models there). It:
1. saves the weights as Track A's model.pt and serves ``yolo11_pytorch`` alone,
   KIND_GPU, with the chosen precision and instance count;
2. checks parity: the server's detections on bus.jpg and zidane.jpg against the
   Ultralytics predictor on the same weights and precision on the same GPU;
3. runs perf_analyzer over gRPC on real JPEGs at each concurrency, with Triton's
   queue / compute input / infer / output times per request;
4. times the project's DALI pipeline (mixed decoder) in-process at batch 1, 32 and
   128, and checks its letterbox against the CPU one, where nvidia-dali is installed;
5. writes report.json, report.md, throughput.png and latency_p95.png with the device,
   driver, torch and Triton versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")

from python_models import contract as c  # noqa: E402
from python_models.client import perf_analyzer as pa  # noqa: E402
from python_models.build import repository as repo  # noqa: E402
from python_models.client.report import PerfAnalyzerFailed, measure, write_report  # noqa: E402
from python_models.serving.triton import Ports, find_triton, server_command, server_env  # noqa: E402
from python_models.serving.status import wait_ready  # noqa: E402
from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402

PARITY_IMAGES = ("bus.jpg", "zidane.jpg")


def layout(out: Path, weights: str, precision: str, instances: int, decode_threads: int = 0,
           cuda_graphs: bool = True) -> tuple[Path, bool]:
    """A repository holding only Track A, on the GPU."""
    from python_models.build.weights import model_spec, resolve_weights

    repository = out / "repository"
    version = repository / repo.PYTORCH / "1"
    version.mkdir(parents=True, exist_ok=True)
    resolved = resolve_weights(weights)
    model, untrained = resolved.model, resolved.untrained
    model.save(str(version / "model.pt"))
    config = repo.pytorch_config(model_spec(model), mc.ModelInstanceGroup.KIND_GPU, instances, precision)
    config.parameters["decode_threads"].string_value = str(decode_threads)
    config.parameters["cuda_graphs"].string_value = "true" if cuda_graphs else "false"
    (repository / repo.PYTORCH / "config.pbtxt").write_text(repo.to_pbtxt(config))
    (version / "model.py").write_text(repo.python_entry("pytorch_model"))
    return repository, untrained


def parity(grpc_url: str, weights_pt: Path, precision: str) -> dict:
    """Server vs the Ultralytics predictor, same weights, same precision, same GPU."""
    import tritonclient.grpc as grpcclient
    from ultralytics import YOLO
    from ultralytics.utils import ASSETS

    from python_models.client import infer_grpc, served_spec, unpack_detections
    from python_models.client.matching import differences, max_score_difference, predictor_detections, tolerance

    model = YOLO(str(weights_pt))
    client = grpcclient.InferenceServerClient(grpc_url)
    min_iou, score_tol, _ = tolerance(repo.PYTORCH, precision, against="predictor")
    spec = served_spec(client, repo.PYTORCH)
    results = {}
    for name in PARITY_IMAGES:
        data = (Path(ASSETS) / name).read_bytes()
        ref = predictor_detections(model, Path(ASSETS) / name, spec, half=precision == "fp16", device=0)
        (got,) = unpack_detections(infer_grpc(client, repo.PYTORCH, [data]))
        problems = differences(got, ref, spec, min_iou, score_tol) if len(ref) else ["the reference found nothing"]
        results[name] = {"served": len(got), "reference": len(ref), "problems": problems,
                         "max_score_diff": max_score_difference(got, ref, min_iou)}
    return {"tolerance": {"min_iou": min_iou, "score": score_tol}, "images": results,
            "passed": all(not r["problems"] for r in results.values())}


DALI_LOOPS = {
    # name: (CPU threads, prefetch queue depth)
    "synchronous, 4 threads": (4, 1),
    "pipelined, 8 threads, prefetch 2": (8, 2),
}
"""How the in-process loop drives the pipeline: one batch at a time, or with the next batch already queued so
DALI's CPU stage (header parsing, geometry) overlaps the GPU stage, as a serving backend can."""


def dali_benchmark(batches=(1, 32, 128), seconds: float = 3.0) -> dict:
    """The project's DALI graph with the mixed (nvJPEG) decoder, in-process; images/s and letterbox parity."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return {"skipped": "nvidia-dali is not installed here"}
    import numpy as np
    from ultralytics.utils import ASSETS

    from python_models.runtime.dali_letterbox import letterbox_pipeline
    from python_models.runtime.preprocess import decode
    from python_models.runtime.preprocess import letterbox

    out = {}
    for name in PARITY_IMAGES:
        encoded = np.frombuffer((Path(ASSETS) / name).read_bytes(), np.uint8)
        expected, transform = letterbox(decode(encoded), c.DEFAULT_IMAGE_SIZE)
        for batch in batches:
            for loop, (threads, depth) in DALI_LOOPS.items():
                key = f"{name} batch {batch}, {loop}"
                try:
                    pipe = letterbox_pipeline(size=c.DEFAULT_IMAGE_SIZE, batch_size=batch, num_threads=threads, device_id=0,
                                              decoder_device="mixed", prefetch_queue_depth=depth)
                    pipe.build()
                    for _ in range(depth):  # an external source must hold a batch for every queued iteration
                        pipe.feed_input(c.INPUT_IMAGES, [encoded] * batch)

                    def run():
                        outputs = pipe.run()
                        pipe.feed_input(c.INPUT_IMAGES, [encoded] * batch)
                        return outputs

                    images, transforms = run()
                    first = images.as_cpu().as_array()[0]
                    count, start = 0, time.perf_counter()
                    while time.perf_counter() - start < seconds:
                        run()
                        count += batch
                    out[key] = {
                        "images_per_s": round(count / (time.perf_counter() - start), 1),
                        "mean_abs_diff_grey_levels": round(float(np.abs(first - expected).mean() * 255), 4),
                        "transform_identical": bool((transforms.as_cpu().as_array()[0] == transform.to_array()).all()),
                    }
                    del pipe
                except Exception as exc:  # one loop style failing must not lose the others' figures
                    out[key] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return out


def versions(grpc_url: str) -> dict:
    import torch
    import tritonclient.grpc as grpcclient

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    metadata = grpcclient.InferenceServerClient(grpc_url).get_server_metadata()
    return {"gpu": smi, "torch": torch.__version__, "cuda": torch.version.cuda,
            "triton": metadata.version, "cpu_cores": os.cpu_count(), "platform": platform.platform()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="yolo11s.pt", help="a .pt, or a .yaml for an untrained network of that size")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--instances", type=int, default=2, help="yolo11_pytorch instances on the GPU")
    parser.add_argument("--decode-threads", type=int, default=0, help="decode threads per instance (0: preprocess.decode_threads, 8 for 4 instances on 16 cores)")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="run the forward eagerly (parameter cuda_graphs false)")
    parser.add_argument("--concurrency", default="1,16,64,128,256")
    parser.add_argument("--measurement-ms", type=int, default=5000)
    parser.add_argument("--stub-python-bin", type=Path, help="bin/ of the environment the Python backend stub runs in")
    parser.add_argument("--grpc-port", type=int, default=18001)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / time.strftime("gpu-%Y%m%d-%H%M%S"))
    parser.add_argument("--skip-dali", action="store_true")
    parser.add_argument("--dali-only", action="store_true", help="only step 4 (no server): writes dali.json")
    args = parser.parse_args()
    if args.dali_only:
        args.out.mkdir(parents=True, exist_ok=True)
        dali = dali_benchmark()
        (args.out / "dali.json").write_text(json.dumps(dali, indent=2) + "\n")
        print(json.dumps(dali, indent=2))
        return 0

    from rich.console import Console

    console = Console()
    args.out.mkdir(parents=True, exist_ok=True)
    repository, untrained = layout(args.out, args.weights, args.precision, args.instances, args.decode_threads,
                                    not args.no_cuda_graphs)
    install = find_triton()
    ports = Ports(args.grpc_port - 1, args.grpc_port, args.grpc_port + 1)
    grpc_url, metrics_url = f"127.0.0.1:{ports.grpc}", f"http://127.0.0.1:{ports.metrics}/metrics"
    log = open(args.out / "server.log", "wb")
    server = subprocess.Popen(server_command(install, repository, ports), env=server_env(install, args.stub_python_bin),
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_ready(f"http://127.0.0.1:{ports.http}/v2/health/ready", server, timeout_s=600):
            raise SystemExit(f"tritonserver did not become ready: see {args.out / 'server.log'}")
        meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **versions(grpc_url),
                "weights": args.weights + (" (untrained)" if untrained else ""), "precision": args.precision,
                "instances": args.instances, "decode_threads": args.decode_threads,
                "cuda_graphs": not args.no_cuda_graphs, "command": shlex.join(["python3", *sys.argv])}
        console.print(meta)
        checked = parity(grpc_url, repository / repo.PYTORCH / "1" / "model.pt", args.precision)
        console.print({"parity": checked})
        from ultralytics.utils import ASSETS

        input_data = pa.write_input_data([Path(ASSETS) / n for n in PARITY_IMAGES], args.out / "perf_input.json")
        binary = pa.find_binary()
        runs, not_measured = [], {}
        for concurrency in [int(x) for x in args.concurrency.split(",")]:
            csv_path = args.out / "perf" / f"c{concurrency}.csv"
            cmd = pa.command(binary, repo.PYTORCH, grpc_url, input_data, concurrency, csv_path, args.measurement_ms,
                             max_trials=8, stability_percent=30)
            try:
                runs.append(measure(cmd, csv_path, repo.PYTORCH, metrics_url, [repo.PYTORCH]))
            except PerfAnalyzerFailed as exc:
                # Past the queue bound the server refuses requests by design, and perf_analyzer stops at the first.
                not_measured[concurrency] = str(exc).splitlines()[-1][:300]
                console.print(f"perf_analyzer failed at {concurrency}: {not_measured[concurrency]}")
                continue
            perf = runs[-1].perf
            m = runs[-1].server[repo.PYTORCH]
            console.print(f"c={concurrency}: {perf.throughput:.0f} img/s, p50 {perf.p50_ms:.0f} ms, p99 {perf.p99_ms:.0f} ms, "
                          f"batch {m.avg_batch:.1f}, queue {m.queue_ms:.1f} / input {m.compute_input_ms:.1f} / "
                          f"infer {m.compute_infer_ms:.1f} / output {m.compute_output_ms:.1f} ms")
    finally:
        server.terminate()
        server.wait(timeout=60)
    dali = {} if args.skip_dali else dali_benchmark()
    console.print({"dali": dali})
    paths = write_report(args.out, runs, meta, extra={"parity": checked, "dali": dali, "not_measured": not_measured})
    with open(paths["report.md"], "a") as md:
        md.write("\n## Where the time goes (Triton, per request, ms)\n\n| concurrency | queue | compute input | compute infer | compute output |\n|---|---|---|---|---|\n")
        for run in runs:
            m = run.server[repo.PYTORCH]
            md.write(f"| {run.perf.concurrency} | {m.queue_ms:.1f} | {m.compute_input_ms:.1f} | {m.compute_infer_ms:.1f} | {m.compute_output_ms:.1f} |\n")
        for concurrency, reason in not_measured.items():
            md.write(f"\nNot measured at concurrency {concurrency}: perf_analyzer said `{reason}`\n")
        md.write(f"\n## Parity with the Ultralytics predictor ({args.precision}, same GPU)\n\n```\n{json.dumps(checked, indent=2)}\n```\n")
        md.write(f"\n## DALI pipeline, mixed decoder, in-process\n\n```\n{json.dumps(dali, indent=2)}\n```\n")
    console.print(paths["report.md"].read_text())
    return 0 if checked["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
