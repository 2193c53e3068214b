"""Prove a live server: every public model ready with the contract, every track answering as Track A does,
Track A as the Ultralytics predictor does, bad input refused without harming batch-mates, batching under load,
and a short perf_analyzer sweep. Exit 0 only when all of it holds; each failure names the model and the image.

    yolo11-triton check server --grpc-url 127.0.0.1:8001 --http-url 127.0.0.1:8000 --metrics-url 127.0.0.1:8002 \\
        [--images DIR] [--weights artifacts/yolo11_pytorch/1/model.pt] [--out reports/check]

On the GPU host: ``docker compose run --rm check`` (same image, same URLs inside compose's network), also straight
after ``docker compose up -d``: it waits (``--wait-s``, saying so) until the server has loaded its models.
Writes check.json and check.md into --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_OFFLINE", "1")  # the check never downloads anything

from python_models.cli.paths import ROOT  # noqa: E402
from python_models.cli.options import add_server_urls, metrics_endpoint  # noqa: E402

from python_models.export import repository as repo  # noqa: E402
from python_models.client import image_files  # noqa: E402
from python_models.client.server_check import CheckSettings, ServerCheck, default_images, timestamp  # noqa: E402
from python_models.export.artifacts import ARTIFACTS_DIR, read_manifest  # noqa: E402


def served_weights(weights: Path) -> str:
    """What the export next to ``weights`` says it served (export.json), loudly when it is the untrained network."""
    manifest = read_manifest(weights.parent.parent.parent)
    if manifest is None:
        return f"{weights} (no export.json beside it)"
    untrained = " - THE UNTRAINED TEST NETWORK: detections are meaningless" if manifest.untrained else ""
    return f"{weights}, exported from {manifest.weights!r} ({manifest.source}){untrained}"


def wait_for_server(http_url: str, wait_s: float) -> bool:
    """Wait, saying so, until the server answers ``/v2/health/live``: Triton opens its ports once its start-up loads are
    over (failed ones included), so a server still loading does not answer yet. False, with the reason, after
    ``wait_s``."""
    started = time.monotonic()
    said = -1.0
    while True:
        try:
            with urllib.request.urlopen(f"http://{http_url}/v2/health/live", timeout=10) as response:
                if response.status == 200:
                    if said >= 0:
                        print(f"check: the server answers after {time.monotonic() - started:.0f} s", flush=True)
                    return True
                reason = f"it answers {response.status}"
        except OSError as exc:
            reason = f"{exc}"
        waited = time.monotonic() - started
        if waited > wait_s:
            print(f"check: the server at {http_url} did not answer within {wait_s:.0f} s ({reason}); "
                  "docker compose logs triton says why", file=sys.stderr)
            return False
        if said < 0 or waited - said >= 30:
            print(f"check: waiting for the server at {http_url} to finish loading its models ({waited:.0f} s of at "
                  f"most {wait_s:.0f} s; {reason})", flush=True)
            said = waited
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_urls(parser, http=True, metrics=True)
    parser.add_argument("--images", type=Path, help="a folder of JPEG/PNG photos to check on, besides bus.jpg and zidane.jpg")
    parser.add_argument("--weights", type=Path, default=ROOT / ARTIFACTS_DIR / repo.PYTORCH / "1" / "model.pt",
                        help="the .pt the server serves, for the comparison with the Ultralytics predictor")
    parser.add_argument("--models", default=",".join(repo.SERVED_MODELS), help="comma-separated models to check")
    parser.add_argument("--precision", choices=("auto", "fp16", "fp32"), default="auto",
                        help="served precision, for the tolerances (auto: Track A's config)")
    parser.add_argument("--decode", choices=("auto", *repo.TRACK_A_DECODES), default="auto",
                        help="where the served Track A decodes JPEGs, for the tolerances (auto: Track A's config)")
    defaults = CheckSettings(grpc_url="", metrics_url="", models=[], images={})  # its defaults, stated once
    parser.add_argument("--perf-concurrency", default=",".join(map(str, defaults.perf_concurrency)))
    parser.add_argument("--perf-window-ms", type=int, default=defaults.perf_window_ms,
                        help="shortest perf_analyzer window; longer where one request takes long on this server")
    parser.add_argument("--perf-budget-s", type=float, default=defaults.perf_budget_s,
                        help="a concurrency level whose windows would take longer is reported as not measured")
    parser.add_argument("--wait-s", type=float, default=900,
                        help="how long to wait for a server still loading its models before giving up")
    parser.add_argument("--skip-perf", action="store_true", help="no perf_analyzer sweep")
    parser.add_argument("--batching-clients", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "check")
    args = parser.parse_args(argv)

    if not wait_for_server(args.http_url, args.wait_s):
        return 2

    images = default_images()
    for path in image_files(args.images) if args.images else []:
        data = path.read_bytes()
        if data not in images.values():
            images[path.name if path.name not in images else str(path)] = data
    perf = None
    if not args.skip_perf:
        from python_models.client import perf_analyzer as pa

        try:
            perf = pa.find_binary()
        except FileNotFoundError:
            perf = None
    settings = CheckSettings(
        grpc_url=args.grpc_url, metrics_url=metrics_endpoint(args.metrics_url), models=args.models.split(","),
        images=images, weights=args.weights, precision=args.precision,
        decode=args.decode, perf_budget_s=args.perf_budget_s,
        perf_analyzer=perf, skip_perf=args.skip_perf,
        perf_concurrency=[int(c) for c in args.perf_concurrency.split(",")], perf_window_ms=args.perf_window_ms,
        batching_clients=args.batching_clients, out=args.out)
    check = ServerCheck(settings, log=lambda line: print(line, flush=True))
    check.run()
    meta = {"when": timestamp(), "grpc": args.grpc_url, "metrics": args.metrics_url,
            "weights": served_weights(args.weights), "images": ", ".join(images)}
    json_path, md_path = check.write_report(args.out, meta)
    failed = [f for f in check.findings if not f.passed]
    print(f"{'PASSED' if check.passed else 'FAILED'}: {len(check.findings)} checks, {len(failed)} failed; "
          f"report {md_path}", flush=True)
    for f in failed:
        print(f"  {f.check} {f.model} {f.image}: {f.detail[:300]}", flush=True)
    return 0 if check.passed else 1


if __name__ == "__main__":
    sys.exit(main())
