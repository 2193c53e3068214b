"""How many live video streams one server tracks: cameras at a frame rate, more and more of them at once.

    yolo11-triton bench streams --grpc-url 127.0.0.1:8001 --metrics-url 127.0.0.1:8002 [--streams 1,8,16,32,64]
        [--fps 30] [--seconds 20] [--video clip.mp4 | --frame-size 1280x720] [--out results/NAME]

The server must already run (yolo11-triton serve). Each level runs that many streams against the tracking model
(``client.stream_load``: each a camera delivering ``--fps`` frames a second, sending the newest frame once the
previous answer is back, dropping the rest), and reports frames/s per stream and in total, the share of frames
dropped, p50/p99 per frame (send to answer), and from Triton's metrics the frames per execution of the tracking
model and of the detection track it calls. A level keeps up when its streams drop nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from python_models.cli.options import add_server_urls, metrics_endpoint  # noqa: E402

os.environ.setdefault("YOLO_OFFLINE", "1")

from python_models.contract import OUTPUT_NUM_DETECTIONS, TRACK  # noqa: E402


def video_frames(path: Path, limit: int = 300, quality: int = 90) -> list[bytes]:
    """The first ``limit`` frames of a video file, as JPEGs."""
    import itertools

    import cv2

    from python_models.client.streams import file_frames, open_capture

    capture = open_capture(str(path))
    try:
        frames = [cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
                  for _, frame, _ in itertools.islice(file_frames(capture), limit)]
    finally:
        capture.release()
    if not frames:
        raise SystemExit(f"bench streams: no frame could be read from {path}")
    return frames


def level_table(levels: list[dict]) -> str:
    rows = ["| streams | fps each | frames/s total | per stream (slowest) | dropped | p50 ms | p99 ms | errors "
            "| frames per execution: tracking / detector | detections a frame |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in levels:
        rows.append(f"| {r['streams']} | {r['fps']:g} | {r['frames_per_s']:,.0f} | {r['frames_per_s_per_stream']:.1f} "
                    f"({r['slowest_stream_frames_per_s']:.1f}) | {100 * r['dropped_share']:.1f}% | {r['p50_ms']} "
                    f"| {r['p99_ms']} | {r['errors']} | {r.get('tracking_batch', 0):.1f} / {r.get('detector_batch', 0):.1f} "
                    f"| {r.get('detections_per_frame', '')} |")
    return "\n".join(rows) + "\n"


def run_levels(grpc_url: str, metrics_url: str | None, levels: list[int], fps: float, seconds: float,
               frames: list[bytes], model: str = TRACK, processes: int = 0, log=print,
               warm_up_s: float = 3.0) -> list[dict]:
    """Each level in turn (after ``warm_up_s`` of the first), with Triton's batching of the tracking model and its
    detector."""
    import tritonclient.grpc as grpcclient

    from python_models.client import infer_grpc
    from python_models.client.metrics import SUMMARY_FAMILIES, scrape, summarise
    from python_models.client.stream_load import drive_streams

    client = grpcclient.InferenceServerClient(grpc_url)
    detector = client.get_model_config(model).config.parameters["detector"].string_value
    # What the trackers get to do: their cost grows with the detections in a frame.
    found = [int(infer_grpc(client, detector, [frame])[OUTPUT_NUM_DETECTIONS].reshape(-1)[0]) for frame in frames[:10]]
    client.close()
    if warm_up_s:
        drive_streams(grpc_url, min(levels), fps, warm_up_s, frames, model, processes, first_id=10_000_000)
    results = []
    for index, streams in enumerate(levels):
        before = scrape(metrics_url, SUMMARY_FAMILIES) if metrics_url else {}
        result = drive_streams(grpc_url, streams, fps, seconds, frames, model, processes,
                               first_id=1 + index * 100_000)
        if metrics_url:
            after = scrape(metrics_url, SUMMARY_FAMILIES)
            tracking, detection = summarise(before, after, model), summarise(before, after, detector)
            result.update(tracking_batch=round(tracking.avg_batch, 2), detector_batch=round(detection.avg_batch, 2),
                          tracking_queue_ms=round(tracking.queue_ms, 2), detector_queue_ms=round(detection.queue_ms, 2))
        result.update(detector=detector, detections_per_frame=round(sum(found) / len(found), 1))
        log(json.dumps(result))
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_urls(parser, metrics=True)
    parser.add_argument("--model", default=TRACK, help="the tracking model")
    parser.add_argument("--streams", default="1,8,16,32,64", help="levels: streams at once")
    parser.add_argument("--fps", type=float, default=30.0, help="frames a second each camera delivers")
    parser.add_argument("--seconds", type=float, default=20.0, help="per level")
    parser.add_argument("--video", type=Path, help="a video file the cameras play (default: a panning 720p scene)")
    parser.add_argument("--frame-size", default="1280x720", help="WxH of the default scene's frames")
    parser.add_argument("--processes", type=int, default=0, help="client processes (0: a quarter of the cores)")
    parser.add_argument("--warm-up-seconds", type=float, default=3.0, help="of the first level, before measuring")
    parser.add_argument("--out", type=Path, help="folder for report.json and report.md")
    args = parser.parse_args(argv)

    from python_models.client.stream_load import camera_frames

    if args.video:
        frames = video_frames(args.video)
    else:
        width, height = (int(v) for v in args.frame_size.lower().split("x"))
        frames = camera_frames(size=(width, height))
    levels = run_levels(args.grpc_url, metrics_endpoint(args.metrics_url), [int(v) for v in args.streams.split(",")],
                        args.fps, args.seconds, frames, args.model, args.processes, warm_up_s=args.warm_up_seconds)
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d %H:%M"), "command": shlex.join(["yolo11-triton", "bench", "streams",
                                                                             *sys.argv[1:]]),
              "frames": f"{args.video}" if args.video else f"panning scene {args.frame_size}", "levels": levels}
    table = level_table(levels)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "report.md").write_text(f"# Streams tracked at once\n\n{report['machine']}, {report['date']}\n\n"
                                            f"`{report['command']}`\n\nFrames: {report['frames']}; detector "
                                            f"{levels[0]['detector'] if levels else ''}, "
                                            f"{levels[0]['detections_per_frame'] if levels else ''} detections a "
                                            f"frame\n\n{table}")
    return 0
