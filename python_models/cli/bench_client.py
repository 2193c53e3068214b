"""Is yolo11-triton detect the bottleneck? Its images/s against perf_analyzer's, same server, images and concurrency,
and its own ceiling against a model that answers at once.

    .venv/bin/yolo11-triton bench client --grpc-url 127.0.0.1:8001 [--model yolo11_trt] [--concurrency 8]
        [--images 400] [--instant-model yolo11_instant] [--instant-images 4000] [--out reports/bench_detect.json]

The server must already run (yolo11-triton serve; the instant model is tests/models/yolo11_instant, served with
--extra-models tests/models). The images are copies of the ultralytics sample photos (bus.jpg, zidane.jpg), the
same two perf_analyzer sends; for the instant model, small JPEG crops, so that reading files is not what is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from python_models.cli.paths import ROOT  # noqa: E402
from python_models.cli.options import add_server_urls  # noqa: E402
os.environ.setdefault("YOLO_OFFLINE", "1")

from python_models.client import perf_analyzer as pa  # noqa: E402


def detect_rate(folder: Path, model: str, url: str, concurrency: int, per_request: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "python_models", "detect", str(folder), "--model", model, "--grpc-url", url,
                   "--out", str(Path(out) / "out.jsonl"), "--concurrency", str(concurrency),
                   "--images-per-request", str(per_request), "--quiet"]
        result = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"summary"')]
    if not lines:
        raise RuntimeError(f"detect.py failed: {result.stderr[-2000:]}")
    return json.loads(lines[0])["summary"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_urls(parser)
    parser.add_argument("--model", default="yolo11_trt")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--instant-model", default="yolo11_instant")
    parser.add_argument("--instant-images", type=int, default=4000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import cv2
    from ultralytics.utils import ASSETS

    samples = [Path(ASSETS) / "bus.jpg", Path(ASSETS) / "zidane.jpg"]
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        photos = work / "photos"
        photos.mkdir()
        for index in range(args.images):
            (photos / f"{index:05d}_{samples[index % 2].name}").write_bytes(samples[index % 2].read_bytes())
        csv = work / "perf.csv"
        command = pa.command(pa.find_binary(), args.model, args.grpc_url, pa.write_input_data(samples, work / "in.json"),
                             args.concurrency, csv, measurement_ms=8000)
        subprocess.run(command, capture_output=True, text=True, check=True)
        (perf,) = pa.parse_csv(csv)
        ours = detect_rate(photos, args.model, args.grpc_url, args.concurrency, 1)
        report["same_server"] = {"model": args.model, "concurrency": args.concurrency,
                                 "perf_analyzer_images_per_s": round(perf.throughput, 1),
                                 "detect_py_images_per_s": ours["images_per_s"], "images": ours["images"],
                                 "ratio": round(ours["images_per_s"] / perf.throughput, 3)}

        small = work / "small"
        small.mkdir()
        crop = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(samples[0])), (64, 80)))[1].tobytes()
        for index in range(args.instant_images):
            (small / f"{index:05d}.jpg").write_bytes(crop)
        report["instant"] = []
        for per_request, concurrency in ((1, 8), (8, 8), (1, 32)):
            run = detect_rate(small, args.instant_model, args.grpc_url, concurrency, per_request)
            report["instant"].append({"images_per_request": per_request, "concurrency": concurrency,
                                      "images_per_s": run["images_per_s"], "retries": run["retries"],
                                      "images": run["images"], "errors": run["errors"]})
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
