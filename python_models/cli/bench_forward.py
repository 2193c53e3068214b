"""Time Track A's network forward alone on a GPU, as served and with the usual speed-ups, and print a table.

    yolo11-triton bench forward [--weights yolo11s.yaml] [--batches 1,8,32,64] [--precision fp16]
                                   [--processes 1,2,4] [--compile]

Every variant starts from letterboxed uint8 BGR images in host memory, as
``yolo11_pytorch`` holds them after decoding, and ends with the head output on the
GPU, synchronised:

- eager, NCHW, from pageable memory: what ``yolo11_pytorch`` ran first;
- ``cudnn.benchmark``: the same with cuDNN's autotuner on;
- ``channels_last``: network and input in NHWC memory layout, autotuner on;
- pinned: the uint8 batch staged in page-locked memory before the copy; with the
  two above, what ``network.load_network`` / ``forward_padded`` serve with the
  parameter ``cuda_graphs`` false;
- CUDA graph: one captured graph per batch size replays the whole forward, so
  Python launches nothing per layer (``network.GraphedForward``, served by default);
- ``torch.compile`` (``--compile``): inductor's default mode.

A second table times NMS on the GPU over the same batch's head output: Ultralytics'
per-image loop against ``python_models.runtime.nms``.

``--processes`` runs the pinned channels-last eager variant (``cuda_graphs``
false) in N processes at once on the same GPU, as N Triton instances of a
Python-backend model would, and reports their summed images/s (each process its
own CUDA context, so the GPU time-slices between them).
"""

from __future__ import annotations

import argparse
import copy
import functools
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from python_models.cli.paths import ROOT  # noqa: E402
os.environ.setdefault("YOLO_OFFLINE", "1")


@functools.cache
def fused_network(weights: str):
    from python_models.export.weights import resolve_weights

    return resolve_weights(weights).model.model.fuse().eval()


def load(weights: str, half: bool, channels_last: bool = False):
    """A fresh GPU copy of the fused network, as ``network.load_network`` prepares it."""
    import torch

    net = copy.deepcopy(fused_network(weights)).to("cuda")
    net = net.half() if half else net.float()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def sample_batch(batch: int):
    import cv2
    import numpy as np
    from ultralytics.utils import ASSETS

    from python_models.contract import DEFAULT_IMAGE_SIZE
    from python_models.runtime.letterbox import letterbox_padded

    images = [letterbox_padded(cv2.imread(str(ASSETS / name)), DEFAULT_IMAGE_SIZE)[0] for name in ("bus.jpg", "zidane.jpg")]
    return np.stack([images[i % 2] for i in range(batch)])


def ms_per_call(fn: Callable[[], object], seconds: float = 2.0) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        torch.cuda.synchronize()
        calls += 1
    return (time.perf_counter() - start) / calls * 1e3


def variants(weights: str, half: bool, batch: int, with_compile: bool) -> dict[str, Callable[[], object]]:
    import torch

    from python_models.runtime.network import GraphedForward, forward_padded

    dtype = torch.half if half else torch.float
    host = sample_batch(batch)
    pinned = torch.from_numpy(host).pin_memory()
    device = torch.device("cuda")
    net = load(weights, half)
    net_nhwc = load(weights, half, channels_last=True)

    def to_input(x: torch.Tensor, nhwc: bool) -> torch.Tensor:
        x = x.to(device, non_blocking=True).flip(-1).permute(0, 3, 1, 2).to(dtype).mul_(1 / 255)
        return x.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)

    @torch.inference_mode()
    def eager(model, nhwc: bool, source, autotune: bool) -> object:
        torch.backends.cudnn.benchmark = autotune
        return model(to_input(source, nhwc))

    found: dict[str, Callable[[], object]] = {
        "eager NCHW, pageable (served before)": lambda: eager(net, False, torch.from_numpy(host), False),
        "+ cudnn.benchmark": lambda: eager(net, False, torch.from_numpy(host), True),
        "+ channels_last": lambda: eager(net_nhwc, True, torch.from_numpy(host), True),
        # yolo11_pytorch with cuda_graphs false (detector.load_network / forward_padded, staging buffer pinned).
        "+ pinned (served with cuda_graphs false)": lambda: forward_padded(net_nhwc, pinned, device, half),
    }

    torch.backends.cudnn.benchmark = True  # as detector.load_network sets it, for the capture's autotuning
    graphed = GraphedForward(net_nhwc, device, half, batch)
    found["+ CUDA graph (served, detector.GraphedForward)"] = lambda: graphed(pinned)
    if with_compile:
        compiled = torch.compile(net_nhwc)
        found["torch.compile + channels_last"] = lambda: eager(compiled, True, pinned, True)
    return found


def nms_variants(weights: str, half: bool, batch: int) -> dict[str, Callable[[], object]]:
    """NMS over this batch's real head output on the GPU, ending with detections in host memory."""
    import numpy as np
    import torch
    from ultralytics.utils.nms import non_max_suppression

    from python_models.contract import ModelSpec
    from python_models.runtime.network import forward_padded
    from python_models.runtime.nms import nms

    device = torch.device("cuda")
    raw = forward_padded(load(weights, half, channels_last=True), torch.from_numpy(sample_batch(batch)), device, half)
    spec = ModelSpec(names=("",) * (raw.shape[1] - 4))  # the default size and thresholds, as served by default

    def per_image_loop() -> object:
        kept = non_max_suppression(raw.float(), spec.conf, spec.iou, max_det=spec.max_det)
        return [k.cpu().numpy().astype(np.float32, copy=False) for k in kept]

    return {"Ultralytics per-image loop (served before)": per_image_loop, "python_models.runtime.nms (served now)": lambda: nms(raw, spec)}


def _process_worker(weights: str, half: bool, batch: int, seconds: float, start, results) -> None:
    import torch

    from python_models.runtime.network import forward_padded

    torch.backends.cudnn.benchmark = True
    net = load(weights, half, channels_last=True)
    host = torch.from_numpy(sample_batch(batch)).pin_memory()
    device = torch.device("cuda")
    for _ in range(3):
        forward_padded(net, host, device, half)
    torch.cuda.synchronize()
    start.wait()
    calls, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < seconds:
        forward_padded(net, host, device, half)
        torch.cuda.synchronize()
        calls += 1
    results.put(calls * batch / (time.perf_counter() - begin))


def processes_images_per_s(weights: str, half: bool, batch: int, processes: int, seconds: float = 4.0) -> float:
    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_process_worker, args=(weights, half, batch, seconds, start, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    total = sum(results.get(timeout=600) for _ in workers)
    for worker in workers:
        worker.join()
    return total


def print_table(first: str, columns: list[str], rows: dict[str, list[str]]) -> None:
    """A markdown table, blank line first, as results/h100_forward/report.md holds them."""
    print(f"\n| {first} | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="yolo11s.yaml")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--processes", default="", help="comma-separated process counts for the eager variant")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench_forward.py times the GPU forward: no CUDA device here")
    half = args.precision == "fp16"
    batches = [int(b) for b in args.batches.split(",")]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.weights}, {args.precision}")
    rows: dict[str, dict[int, float]] = {}
    for batch in batches:
        for name, fn in variants(args.weights, half, batch, args.compile).items():
            rows.setdefault(name, {})[batch] = ms_per_call(fn)
    print_table("variant", [f"batch {b}: ms (img/s)" for b in batches],
                {name: [f"{ms[b]:.2f} ({b / ms[b] * 1e3:,.0f})" for b in batches] for name, ms in rows.items()})
    nms_rows: dict[str, dict[int, float]] = {}
    for batch in batches:
        for name, fn in nms_variants(args.weights, half, batch).items():
            nms_rows.setdefault(name, {})[batch] = ms_per_call(fn)
    print_table("NMS of a head output on the GPU, to host rows", [f"batch {b}: ms" for b in batches],
                {name: [f"{ms[b]:.2f}" for b in batches] for name, ms in nms_rows.items()})
    if args.processes:
        counts = [int(p) for p in args.processes.split(",")]
        print_table("processes (eager, cuda_graphs false)", [f"batch {b}: img/s" for b in batches],
                    {str(n): [f"{processes_images_per_s(args.weights, half, b, n):,.0f}" for b in batches] for n in counts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
