"""Track A's network on its device: load the saved weights, run the forward (eagerly or replayed from CUDA graphs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from python_models.contract import PAD_VALUE


def load_network(path: str | Path, device: torch.device, half: bool = False) -> torch.nn.Module:
    """The fused, eval-mode network from a saved ``.pt``, ready for ``forward``.

    On a GPU the weights go channels-last and cuDNN picks its fastest kernels per shape
    (``GraphedForward``'s capture, or ``warm_up``, pays that choice before requests do):
    with pinned input that takes yolo11s FP16 at batch 32 on an H100 from 18.5 to 12 ms
    (tools/bench_forward.py).
    """
    from ultralytics import YOLO

    net = YOLO(str(path)).model.fuse().eval().to(device)
    net = net.half() if half else net.float()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        net = net.to(memory_format=torch.channels_last)
    return net


def warm_up(net: torch.nn.Module, device: torch.device, half: bool, max_batch: int, size: int) -> None:
    """Run every batch size up to ``max_batch`` once, so cuDNN's per-shape autotuning happens now."""
    if device.type != "cuda":
        return
    for batch in range(1, max_batch + 1):
        forward_padded(net, torch.full((batch, size, size, 3), PAD_VALUE, dtype=torch.uint8), device, half)
    torch.cuda.synchronize(device)


def graph_batch_sizes(max_batch: int) -> list[int]:
    """Powers of two up to ``max_batch``, and ``max_batch``: a batch runs in the smallest that holds it."""
    sizes = {max_batch}
    size = 1
    while size < max_batch:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def module_tensors(net: torch.nn.Module) -> list[torch.Tensor]:
    """Tensors held as plain attributes of ``net``'s modules (not parameters or buffers): what a forward may have
    cached, such as the ``Detect`` head's anchors and strides for the last input shape."""
    return [value for module in net.modules() for value in vars(module).values() if isinstance(value, torch.Tensor)]


class GraphedForward:
    """``forward_padded`` replayed from CUDA graphs, one per batch size of ``graph_batch_sizes``.

    Eager PyTorch launches a few hundred kernels per forward from Python: with
    several instances and decode threads sharing the host's cores, that launching,
    not the GPU, bounds Track A (yolo11s FP16 batch 8 on an H100: 6.0 ms eager,
    3.4 ms replayed; batch 1: 7.5 vs 1.3 ms; tools/bench_forward.py). A batch of n
    rows runs in the smallest captured size >= n; the spare rows hold whatever an
    earlier batch left there and their outputs are dropped (rows never interact).
    The output tensor is the graph's own: read it before the next call.
    """

    def __init__(self, net: torch.nn.Module, device: torch.device, half: bool, max_batch: int, size: int) -> None:
        self.sizes = graph_batch_sizes(max_batch)
        self.graphs: dict[int, tuple[torch.Tensor, torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.captured_state: dict[int, list[torch.Tensor]] = {}
        pool = torch.cuda.graph_pool_handle()  # one memory pool: the graphs never run at the same time
        stream = torch.cuda.Stream(device)
        for rows in reversed(self.sizes):  # largest first, so the smaller ones fit in its memory
            static_in = torch.full((rows, size, size, 3), PAD_VALUE, dtype=torch.uint8, device=device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):  # warm (cuDNN autotuning) off the capture, as capture requires
                for _ in range(2):
                    forward_padded(net, static_in, device, half)
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                static_out = forward_padded(net, static_in, device, half)
            self.graphs[rows] = (static_in, graph, static_out)
            self.captured_state[rows] = module_tensors(net)
        torch.cuda.synchronize(device)

    def __call__(self, padded_bgr: torch.Tensor) -> torch.Tensor:
        rows = len(padded_bgr)
        size = next((s for s in self.sizes if s >= rows), None)
        if size is None:
            raise ValueError(f"batch of {rows} rows, over the largest captured size {self.sizes[-1]}")
        static_in, graph, static_out = self.graphs[size]
        static_in[:rows].copy_(padded_bgr, non_blocking=True)
        graph.replay()
        return static_out[:rows]


@torch.inference_mode()
def forward(net: torch.nn.Module, batch: np.ndarray, device: torch.device, half: bool = False) -> torch.Tensor:
    """Raw head output ``[B, 4 + classes, anchors]`` for letterboxed float32 CHW images."""
    x = torch.from_numpy(batch).to(device, non_blocking=True)
    y = net(x.half() if half else x)
    y = y[0] if isinstance(y, (list, tuple)) else y
    return y.float()


@torch.inference_mode()
def forward_padded(
    net: torch.nn.Module, padded_bgr: np.ndarray | torch.Tensor, device: torch.device, half: bool = False
) -> torch.Tensor:
    """The head output for letterboxed BGR HWC uint8 images ``[B, H, W, 3]``: uint8 crosses to the device,
    which does BGR->RGB, CHW and the /255 (as ``letterbox`` does on the CPU, in the same float32 steps).

    From page-locked host memory (a pinned tensor) the copy is asynchronous and about twice as fast.
    """
    x = torch.as_tensor(padded_bgr).to(device, non_blocking=True)
    x = x.flip(-1).permute(0, 3, 1, 2)
    x = (x.half() if half else x.float()).mul_(1 / 255)
    x = x.contiguous(memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)
    out = net(x)
    return out[0] if isinstance(out, (list, tuple)) else out
