"""What a call the DALI leaf fails costs Track D: bursts of good requests against bursts holding one damaged image.

    yolo11-triton bench dali-isolation [--model yolo11_dali_balanced] [--requests 16] [--rounds 10] [--out FILE]

Against a running server (default ports): each round sends ``--requests`` single-image requests at once (bus.jpg),
all good, then the same with one replaced by an image only a decoder finds damaged (a PNG whose compressed data is
destroyed behind valid CRCs), which fails the DALI call holding it; the guard sends that call again in parts. Reports
per burst the median wall time, the requests refused, and from Triton's metrics the leaf's calls and rows, the guard's
executions and the rows decoded on the CPU.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import time
from pathlib import Path

from python_models import contract as c
from python_models.cli.options import add_server_urls, metrics_endpoint


def burst(client, model: str, rows: list[bytes]) -> tuple[float, int]:
    """Seconds until every request of ``rows`` (one image each, sent at once) is answered, and how many failed."""
    import tritonclient.grpc as grpcclient

    from python_models.client import pack_images

    answers: queue.Queue = queue.Queue()
    start = time.perf_counter()
    for data in rows:
        packed = pack_images([data])
        tensor = grpcclient.InferInput(c.INPUT_IMAGES, list(packed.shape), "UINT8")
        tensor.set_data_from_numpy(packed)
        client.async_infer(model, [tensor], lambda result, error: answers.put(error), client_timeout=300)
    failed = sum(answers.get(timeout=300) is not None for _ in rows)
    return time.perf_counter() - start, failed


def main(argv: list[str] | None = None) -> int:
    import cv2
    import tritonclient.grpc as grpcclient
    from ultralytics.utils import ASSETS

    from python_models.client.bad_inputs import decoder_only_damage
    from python_models.client.metrics import scrape

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_urls(parser, metrics=True)
    parser.add_argument("--model", default=c.dali_ensemble_name(c.DALI_TIERS[1]), choices=[
        c.dali_ensemble_name(t) for t in c.DALI_TIERS])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    tier = next(t for t in c.DALI_TIERS if c.dali_ensemble_name(t) == args.model)
    leaf, guard = c.dali_preprocess_name(tier), c.dali_guard_name(tier)
    bus = (Path(ASSETS) / "bus.jpg").read_bytes()
    png = cv2.imencode(".png", cv2.resize(cv2.imread(str(Path(ASSETS) / "zidane.jpg")), (640, 480)))[1].tobytes()
    damaged = decoder_only_damage(bus, png)["png_pixel_data_damaged_crcs_intact"]
    client = grpcclient.InferenceServerClient(args.grpc_url)
    families = ["nv_inference_exec_count", "nv_inference_count", c.DALI_CPU_FALLBACK_METRIC]
    metrics = metrics_endpoint(args.metrics_url)
    half = args.requests // 2
    report: dict = {"model": args.model, "requests_per_burst": args.requests, "rounds": args.rounds}
    for label, rows in (("all good", [bus] * args.requests),
                        ("one damaged", [bus] * half + [damaged] + [bus] * (args.requests - half - 1))):
        burst(client, args.model, rows)  # warm
        before, seconds = scrape(metrics, families), []
        for _ in range(args.rounds):
            took, failed = burst(client, args.model, rows)
            seconds.append(took)
        after = scrape(metrics, families)

        def per_burst(family: str, model: str) -> float:
            return round((after.get((family, model), 0.0) - before.get((family, model), 0.0)) / args.rounds, 2)

        report[label] = {"burst_s_median": round(statistics.median(seconds), 3), "refused_per_burst": failed,
                         "leaf_calls": per_burst("nv_inference_exec_count", leaf),
                         "leaf_rows": per_burst("nv_inference_count", leaf),
                         "guard_executions": per_burst("nv_inference_exec_count", guard),
                         "rows_decoded_on_the_cpu": per_burst(c.DALI_CPU_FALLBACK_METRIC, guard)}
        print(f"{label:12s} {json.dumps(report[label])}", flush=True)
    client.close()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
