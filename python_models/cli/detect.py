"""Detect objects in a folder of images, a list, a glob or a video, through one or several servers; nothing lost.
Or follow them through video streams (--track).

    .venv/bin/yolo11-triton detect SOURCE --model yolo11_trt --out results.jsonl [--grpc-url HOST:PORT ...]
        [--concurrency 16] [--images-per-request 1] [--coco-out detections.json] [--coco-annotations instances.json]
    .venv/bin/yolo11-triton detect --track SOURCE [SOURCE ...] --out tracks.jsonl [--save-video DIR]

SOURCE: a folder (recursive), a glob ("photos/**/*.jpg"), a text file of paths, one image, or a video (frames
encoded to JPEG here, named video.mp4#frame=000123). Every input becomes exactly one JSON line in --out: its
size and detections (class id, class name, score, box in original pixels), or the reason it has none. A run
stopped by Ctrl-C or a kill resumes where it stopped: images already in --out are skipped. Full queues
(UNAVAILABLE) and dead servers are retried with backoff, on the least busy server that is up.
Exit status: 0 when every image was answered with detections, 1 when some were refused or gave up, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from python_models.cli.paths import ROOT  # noqa: E402
from python_models.cli.options import GRPC_DEFAULT, add_server_urls  # noqa: E402
os.environ.setdefault("YOLO_OFFLINE", "1")

from python_models.client.bulk import VIDEO_SUFFIXES, BulkDetector, RetryPolicy, done_keys, read_jsonl, source_items  # noqa: E402
from python_models.client.bulk import JsonlWriter, resolve_urls  # noqa: E402
from python_models.client.bulk_processes import default_processes, run_in_processes  # noqa: E402


def interrupt(*_) -> None:
    """SIGTERM stops like Ctrl-C: what is in flight lands and is written, the rest is left for the next run."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="+", help="what to detect in (several only with --track)")
    parser.add_argument("--model", help="a public model, e.g. yolo11_trt_end2end (with --track: yolo11_track)")
    parser.add_argument("--out", type=Path, required=True, help="JSONL, one line per image; also the resume point "
                        "(with --track: one line per frame, written afresh)")
    parser.add_argument("--track", action="store_true", help="follow objects from frame to frame: each SOURCE (a "
                        "video file, an rtsp:// or http:// stream, a camera's device index) is one sequence of the "
                        "tracking model, its frames sent in order; a live source drops frames rather than fall "
                        "behind. Lines carry each detection's track_id")
    parser.add_argument("--save-video", type=Path, metavar="DIR", help="with --track: also write each source, "
                        "annotated with boxes and track IDs, to DIR")
    add_server_urls(parser, several=True)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight over all servers")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--processes", type=int, default=0, help="worker processes sending requests and writing "
                        "answers (0: one per four cores, at most 8); one Python process turns a few thousand answers "
                        "per second into lines, fewer when they carry many detections. A video uses one")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a request is sent again")
    parser.add_argument("--coco-out", type=Path, help="also write the detections as COCO results JSON")
    parser.add_argument("--coco-annotations", type=Path, help="a COCO instances file: image ids from its file "
                        "names, and the COCO mAP summary of the served model on its images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.track:
        from python_models.client.streams import track_sources
        from python_models.contract import TRACK

        signal.signal(signal.SIGTERM, interrupt)
        urls = resolve_urls(args.grpc_url or [GRPC_DEFAULT])
        return track_sources(args.source, urls, args.out, args.save_video, args.model or TRACK, args.timeout,
                             log=lambda text: print(text, file=sys.stderr, flush=True))
    if len(args.source) > 1 or args.save_video or not args.model:
        parser.error("one SOURCE and --model without --track (several sources and --save-video need --track)")
    args.source = args.source[0]

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console(stderr=True)
    detector = BulkDetector(resolve_urls(args.grpc_url or [GRPC_DEFAULT]), args.model, args.concurrency,
                            args.images_per_request, RetryPolicy(), timeout_s=args.timeout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    skip = done_keys(args.out)
    writer = JsonlWriter(args.out)
    processes = args.processes or default_processes()
    video = Path(args.source).suffix.lower() in VIDEO_SUFFIXES
    signal.signal(signal.SIGTERM, interrupt)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]:.0f} images/s, {task.fields[errors]} errors, "
                                   "{task.fields[retries]} retries"), TimeElapsedColumn(), console=console,
                        disable=args.quiet)
    with progress:
        task = progress.add_task(f"{args.model}", total=None, rate=0.0, errors=0, retries=0)

        def show(s):
            progress.update(task, completed=s.images, rate=s.images_per_s, errors=s.errors, retries=s.retries)

        if processes > 1 and not video:
            summary = run_in_processes(detector, source_items(args.source), writer.write_texts, processes, skip, show)
        else:  # frames are decoded in order, in one place: one process
            summary = detector.run(source_items(args.source), writer.write, skip=skip, progress=show)
    writer.close()

    table = Table(title=f"{args.model} on {', '.join(s.url for s in detector.servers)}")
    for column in ("images", "with detections", "errors", "retries", "skipped (resumed)", "seconds", "images/s"):
        table.add_column(column, justify="right")
    table.add_row(str(summary.images), str(summary.detected), str(summary.errors), str(summary.retries),
                  str(summary.skipped), f"{summary.seconds:.1f}", f"{summary.images_per_s:.1f}")
    console.print(table)
    for reason, count in sorted(summary.errors_by_reason.items(), key=lambda kv: -kv[1]):
        console.print(f"  {count} x {reason}")
    if len(detector.servers) > 1:
        console.print("answered by: " + ", ".join(f"{url} {n}" for url, n in summary.by_server.items()))
    print(json.dumps({"summary": {"images": summary.images, "detected": summary.detected, "errors": summary.errors,
                                  "retries": summary.retries, "skipped": summary.skipped,
                                  "seconds": round(summary.seconds, 3), "images_per_s": round(summary.images_per_s, 1),
                                  "interrupted": summary.interrupted, "by_server": summary.by_server,
                                  "processes": 1 if video else processes}}),
          flush=True)

    if args.coco_out or args.coco_annotations:
        from python_models.client.evaluation import coco_evaluate, coco_results

        annotations = json.loads(args.coco_annotations.read_text()) if args.coco_annotations else None
        lines = read_jsonl(args.out)
        results = coco_results(lines, annotations, detector.spec.names)
        if args.coco_out:
            args.coco_out.write_text(json.dumps(results))
        if annotations is not None:
            names = {Path(img["file_name"]).name: img["id"] for img in annotations["images"]}
            seen = [names[Path(line["image"]).name] for line in lines if Path(line["image"]).name in names]
            stats = coco_evaluate(str(args.coco_annotations), results, seen)
            console.print(f"COCO mAP of {args.model} on {len(seen)} annotated images: "
                          + ", ".join(f"{k} {v:.4f}" for k, v in stats.items()))
            print(json.dumps({"coco": stats}))
    if summary.interrupted:
        console.print(f"interrupted: {summary.images} written; run the same command again to do the rest")
        return 130
    return 1 if summary.errors else 0


if __name__ == "__main__":
    sys.exit(main())
