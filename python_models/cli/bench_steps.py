"""Time the Python steps of the serving path in-process, on one core, and print a table.

    .venv/bin/yolo11-triton bench steps [--weights yolo11n.yaml] [--repeat 50]

Steps: a bare ``cv2.imdecode`` + ``cv2.resize`` of bus.jpg (the floor), our
decode + letterbox of the same bytes, NMS over one raw head output (8400 anchors
x 80 classes), and Track A end to end (decode, letterbox, forward, NMS, rescale).

A second table times the CPU twins of Tracks C and D as the server runs them (one
instance, every core): the End2End graph in ONNX Runtime with EfficientNMS, the raw
graph for comparison, and the DALI letterbox pipeline on DALI's CPU operators, per
image at batch 1 and 16.

A third table times Track D's CPU guard (``decode.probe``: headers, truncation, PNG chunk
CRCs, the pixel limit) against a full CPU decode of the same bytes (``cv2.imdecode``), on
one core, per image of several sizes. (Its cost as served, with the Python backend's
round trip, is the ``image_guard`` row of ``yolo11-triton bench sweep`` for any Track D model.)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from python_models.cli.paths import ROOT  # noqa: E402
os.environ.setdefault("YOLO_OFFLINE", "1")


def per_call_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    fn()  # warm caches and lazy initialisation
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples), min(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="yolo11n.yaml")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to")
    args = parser.parse_args(argv)

    os.sched_setaffinity(0, {args.core})
    import cv2
    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table
    from ultralytics.utils import ASSETS

    from python_models.runtime.decode import decode
    from python_models.runtime.network import forward
    from python_models.export.weights import model_spec, resolve_weights
    from python_models.runtime.letterbox import letterbox, letterbox_geometry, letterbox_rgb
    from python_models.runtime.nms import nms, pack_detections

    # After the imports: importing ultralytics sets OpenCV to setNumThreads(0).
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    data = (ASSETS / "bus.jpg").read_bytes()
    array = np.frombuffer(data, np.uint8)
    h, w = cv2.imdecode(array, cv2.IMREAD_COLOR).shape[:2]
    resolved = resolve_weights(args.weights)
    model, untrained = resolved.model, resolved.untrained
    spec = model_spec(model)
    new_h, new_w, _, _ = letterbox_geometry(h, w, spec.imgsz)
    net = model.model.fuse().eval()
    batch, transform = letterbox(decode(data), spec.imgsz)
    row = np.empty((spec.imgsz, spec.imgsz, 3), np.uint8)
    raw = forward(net, batch[None], torch.device("cpu"))

    def track_a() -> object:
        image, t = letterbox(decode(data), spec.imgsz)
        dets = nms(forward(net, image[None], torch.device("cpu")), spec)
        return pack_detections(dets, [t], spec.max_det)

    rows = [
        ("cv2.imdecode + cv2.resize (floor)", lambda: cv2.resize(cv2.imdecode(array, cv2.IMREAD_COLOR), (new_w, new_h))),
        # Into a reused uint8 row, as tracks B and C's step does with its per-instance batch buffer.
        ("decode + letterbox (python_models)", lambda: letterbox_rgb(decode(array), spec.imgsz, out=row)),
        (f"NMS, {spec.num_anchors} x {spec.num_classes} ({len(nms(raw, spec)[0])} kept)", lambda: nms(raw, spec)),
        ("Track A end to end, 1 image", track_a),
    ]
    results = [(name, *per_call_ms(fn, args.repeat if "Track A" not in name else max(5, args.repeat // 5))) for name, fn in rows]
    table = Table(title=f"bus.jpg ({w}x{h}), one core of {platform.processor() or platform.machine()}, "
                        f"torch {torch.__version__}, opencv {cv2.__version__}{', untrained weights' if untrained else ''}")
    table.add_column("step")
    table.add_column("median ms", justify="right")
    table.add_column("min ms", justify="right")
    table.add_column("vs floor", justify="right")
    floor = results[0][1]
    for name, median, best in results:
        table.add_row(name, f"{median:.2f}", f"{best:.2f}", f"{median / floor:.2f}x")
    Console().print(table)
    Console().print(guard_table(args))
    Console().print(twins_table(args, data))
    return 0


def guard_table(args):
    """Track D's guard against a full decode of the same bytes, one core, per image."""
    import cv2
    import numpy as np
    from rich.table import Table
    from ultralytics.utils import ASSETS

    from python_models.runtime.decode import probe

    os.sched_setaffinity(0, {args.core})
    cv2.setNumThreads(1)
    bus = cv2.imread(str(ASSETS / "bus.jpg"))
    zidane = cv2.imread(str(ASSETS / "zidane.jpg"))
    samples = {
        "bus.jpg 810x1080": (ASSETS / "bus.jpg").read_bytes(),
        "zidane.jpg 1280x720": (ASSETS / "zidane.jpg").read_bytes(),
        "JPEG 3840x2160 (q 90)": cv2.imencode(".jpg", cv2.resize(zidane, (3840, 2160)), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes(),
        "PNG 640x480": cv2.imencode(".png", cv2.resize(zidane, (640, 480), interpolation=cv2.INTER_AREA))[1].tobytes(),
        "PNG 1080x810": cv2.imencode(".png", cv2.rotate(bus, cv2.ROTATE_90_CLOCKWISE))[1].tobytes(),
    }
    table = Table(title="Track D guard (decode.probe) vs a full CPU decode, one core, per image")
    for column in ("image", "bytes", "guard ms", "cv2.imdecode ms", "guard / decode"):
        table.add_column(column, justify="left" if column == "image" else "right")
    for name, data in samples.items():
        row = np.frombuffer(data, np.uint8)  # the guard gets numpy rows from Triton
        guard, _ = per_call_ms(lambda: probe(row), args.repeat * 4)
        full, _ = per_call_ms(lambda: cv2.imdecode(row, cv2.IMREAD_COLOR), max(5, args.repeat // 2))
        table.add_row(name, f"{len(data):,}", f"{guard:.3f}", f"{full:.2f}", f"{guard / full:.1%}")
    return table


def twins_table(args, data: bytes):
    """Per-image cost of the Track C and D twins at batch 1 and 16, on every core."""
    import tempfile

    import numpy as np
    from rich.table import Table

    from python_models.contract import INPUT_IMAGES, LETTERBOX_TRANSFORM, ONNX_INPUT
    from python_models.runtime.dali_letterbox import letterbox_pipeline
    from python_models.runtime.decode import decode
    from python_models.export.artifacts import end2end_onnx, export_artifacts, raw_onnx, read_manifest
    from python_models.runtime.letterbox import letterbox_rgb
    from python_models.serving.twins.onnx_session import open_session

    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    cores = len(os.sched_getaffinity(0))
    artifacts = Path(tempfile.mkdtemp(prefix="bench_artifacts_"))
    export_artifacts(args.weights, artifacts)
    end2end, raw = open_session(end2end_onnx(artifacts)), open_session(raw_onnx(artifacts))
    spec = read_manifest(artifacts).spec
    image, transform = letterbox_rgb(decode(data), spec.imgsz)  # what the engines take: uint8 RGB HWC
    encoded = np.frombuffer(data, np.uint8)
    table = Table(title=f"CPU twins of Tracks C and D, bus.jpg, {cores} cores, per image")
    table.add_column("step")
    for batch in (1, 16):
        table.add_column(f"batch {batch}: ms/image", justify="right")
    rows: dict[str, list[str]] = {}
    for batch in (1, 16):
        images = np.repeat(image[None], batch, 0)
        transforms = np.repeat(transform.to_array()[None], batch, 0)
        pipe = letterbox_pipeline(size=spec.imgsz, batch_size=batch, num_threads=cores, device_id=None, decoder_device="cpu",
                                  prefetch_queue_depth=1)
        pipe.build()

        def dali_run():
            pipe.feed_input(INPUT_IMAGES, [encoded] * batch)
            return pipe.run()

        steps = {
            "End2End twin: ONNX Runtime + EfficientNMS (Track C/D engine)":
                lambda: end2end.run(None, {ONNX_INPUT: images, LETTERBOX_TRANSFORM: transforms}),
            "raw twin: ONNX Runtime, no NMS (Track B engine)": lambda: raw.run(None, {ONNX_INPUT: images}),
            "DALI CPU pipeline: decode + letterbox (Track D preprocess)": dali_run,
        }
        repeat = max(3, args.repeat // (5 * batch))
        for name, fn in steps.items():
            median, _ = per_call_ms(fn, repeat)
            rows.setdefault(name, []).append(f"{median / batch:.1f}")
    for name, cells in rows.items():
        table.add_row(name, *cells)
    return table


if __name__ == "__main__":
    sys.exit(main())
