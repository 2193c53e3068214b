"""Track A's network on its device: load the saved weights, run the forward (eagerly, or compiled from the inductor
caches the export built on the GPU host, and either one replayed from CUDA graphs)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from python_models.contract import PAD_VALUE


def load_network(path: str | Path, device: torch.device, half: bool = False) -> torch.nn.Module:
    """The fused, eval-mode network from a saved ``.pt``, ready for ``forward``.

    On a GPU the weights go channels-last and cuDNN picks its fastest kernels per shape
    (``GraphedForward``'s capture, or ``warm_up``, pays that choice before requests do):
    with pinned input that takes yolo11s FP16 at batch 32 on an H100 from 18.5 to 12 ms
    (yolo11-triton bench forward).
    """
    from ultralytics import YOLO

    net = YOLO(str(path)).model.fuse().eval().to(device)
    net = net.half() if half else net.float()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        net = net.to(memory_format=torch.channels_last)
    return net


def warm_up(net: torch.nn.Module, device: torch.device, half: bool, max_batch: int, size: int) -> None:
    """Run every batch size up to ``max_batch`` once, so cuDNN's per-shape autotuning happens now. (A compiled
    forward has one size, which ``load_compiled`` already ran.)"""
    if device.type != "cuda":
        return
    for batch in range(1, max_batch + 1):
        forward_padded(net, torch.full((batch, size, size, 3), PAD_VALUE, dtype=torch.uint8, device=device), device, half)
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
    """A forward over letterboxed uint8 batches replayed from CUDA graphs, one per batch size: the eager network's
    (``forward_padded``) at every size of ``graph_batch_sizes``, or, given a compiled forward (``compiled_forward``,
    one size: its ``batch_sizes``), that one for full batches and the eager network's for the small sizes it
    runs faster.

    Eager PyTorch launches a few hundred kernels per forward from Python: with
    several instances and decode threads sharing the host's cores, that launching,
    not the GPU, bounds Track A (yolo11s FP16 batch 8 on an H100: 6.0 ms eager,
    3.4 ms replayed; batch 1: 7.5 vs 1.3 ms; yolo11-triton bench forward). A compiled forward computes a whole
    batch of its size for one row (on an H200, yolo11s FP16: 4.7 ms for 32 rows, where the eager graph of one
    row takes 1.5 ms), so a quiet server would answer each request at the full batch's cost: at load, each small
    size's eager graph is timed against the compiled one and kept where it is faster (``faster_eager_sizes``).
    A batch of n rows runs in the smallest captured size >= n; the spare rows hold whatever an earlier batch
    left there and their outputs are dropped (rows never interact).
    The output tensor is the graph's own: read it before the next call.
    """

    def __init__(self, net: torch.nn.Module, device: torch.device, half: bool, max_batch: int, size: int,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        eager = lambda batch: forward_padded(net, batch, device, half)  # noqa: E731
        compiled_sizes = list(getattr(forward, "batch_sizes", None) or []) if forward is not None else []
        plan = {rows: forward for rows in compiled_sizes}
        smallest_compiled = min(compiled_sizes, default=max_batch + 1)
        plan.update({rows: eager for rows in graph_batch_sizes(max_batch) if rows < smallest_compiled})
        self.graphs: dict[int, tuple[torch.Tensor, torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.captured_state: dict[int, list[torch.Tensor]] = {}
        pool = torch.cuda.graph_pool_handle()  # one memory pool: the graphs never run at the same time
        stream = torch.cuda.Stream(device)
        for rows in sorted(plan, reverse=True):  # largest first, so the smaller ones fit in its memory
            run = plan[rows]
            static_in = torch.full((rows, size, size, 3), PAD_VALUE, dtype=torch.uint8, device=device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):  # warm (cuDNN autotuning) off the capture, as capture requires
                for _ in range(2):
                    run(static_in)
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                static_out = run(static_in)
            self.graphs[rows] = (static_in, graph, static_out)
            self.captured_state[rows] = module_tensors(net)
        torch.cuda.synchronize(device)
        self.compiled_sizes = compiled_sizes
        self.replay_ms = {rows: self._replay_ms(rows) for rows in self.graphs} if compiled_sizes else {}
        if compiled_sizes:
            kept = faster_eager_sizes(self.replay_ms, compiled_sizes)
            for rows in [r for r in self.graphs if r not in compiled_sizes and r not in kept]:
                del self.graphs[rows], self.captured_state[rows]
        self.sizes = sorted(self.graphs)

    def _replay_ms(self, rows: int, repeats: int = 10) -> float:
        _, graph, _ = self.graphs[rows]
        graph.replay()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            graph.replay()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats * 1e3

    def describe(self) -> str:
        """Which sizes run which forward, for the load log."""
        eager = [rows for rows in self.sizes if rows not in self.compiled_sizes]
        if not self.compiled_sizes:
            return f"of the eager network at batch {', '.join(map(str, eager))}"
        return (f"of the compiled network at batch {', '.join(map(str, self.compiled_sizes))}"
                + (f", of the eager network at batch {', '.join(map(str, eager))}" if eager else "")
                + " (replay ms: " + ", ".join(f"{r}: {ms:.2f}" for r, ms in sorted(self.replay_ms.items())) + ")")

    def __call__(self, padded_bgr: torch.Tensor) -> torch.Tensor:
        rows = len(padded_bgr)
        size = next((s for s in self.sizes if s >= rows), None)
        if size is None:
            raise ValueError(f"batch of {rows} rows, over the largest captured size {self.sizes[-1]}")
        static_in, graph, static_out = self.graphs[size]
        static_in[:rows].copy_(padded_bgr, non_blocking=True)
        graph.replay()
        return static_out[:rows]


def faster_eager_sizes(replay_ms: dict[int, float], compiled_sizes: Sequence[int]) -> list[int]:
    """The eager graphs' batch sizes worth keeping beside a compiled forward: those that replay faster than the
    smallest compiled size that would otherwise run their batches."""
    kept = []
    for rows, ms in sorted(replay_ms.items()):
        if rows in compiled_sizes:
            continue
        covering = min((c for c in compiled_sizes if c >= rows), default=None)
        if covering is None or ms < replay_ms[covering]:
            kept.append(rows)
    return kept


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
    return PaddedForward(net, half)(torch.as_tensor(padded_bgr).to(device, non_blocking=True))


class PaddedForward(torch.nn.Module):
    """``forward_padded`` as a module over a batch already on the network's device: what ``compiled_forward``
    compiles, so the cast, the channel flip, the layout change and the /255 are fused with the network."""

    def __init__(self, net: torch.nn.Module, half: bool) -> None:
        super().__init__()
        self.net, self.half = net, half

    def forward(self, padded_bgr: torch.Tensor) -> torch.Tensor:
        x = padded_bgr.flip(-1).permute(0, 3, 1, 2)
        x = (x.half() if self.half else x.float()).mul_(1 / 255)
        x = x.contiguous(memory_format=torch.channels_last if x.is_cuda else torch.contiguous_format)
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out


COMPILE_CACHE = "model.inductor_cache"
COMPILED_RECORD = "model_compiled.json"
"""Beside ``model.pt``: the compiled network's inductor caches (autotuned kernels and generated code) and what they were
built for (``python_models.export.compiled_network``)."""
COMPILE_MODE = "max-autotune-no-cudagraphs"
"""Autotuned kernels; CUDA graphs are ``GraphedForward``'s, as for the eager network."""


class CompiledNetworkError(RuntimeError):
    """The compiled network's caches are missing, were built for something else, or did not serve it; the message
    says what and how to rebuild."""


def network_fingerprint(net: torch.nn.Module) -> str:
    """The network's weights (names, dtypes, values): what the caches were built and checked with."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def compiled_target(net: torch.nn.Module, device: torch.device, half: bool, max_batch: int, size: int) -> dict:
    """What compiled caches must have been built for to serve here: the fields of their record that must match."""
    capability = "{}.{}".format(*torch.cuda.get_device_capability(device)) if device.type == "cuda" else "cpu"
    return {"torch": torch.__version__, "capability": capability, "precision": "fp16" if half else "fp32",
            "image_size": size, "fingerprint": network_fingerprint(net), "max_batch": max_batch, "mode": COMPILE_MODE}


def compiled_mismatches(record: dict, wanted: dict) -> list[str]:
    """Why caches built as ``record`` says cannot serve ``wanted`` (empty: they can)."""
    problems = [f"{key} {record.get(key)!r}, not {value!r}" for key, value in wanted.items()
                if key != "max_batch" and record.get(key) != value]
    if int(record.get("max_batch", 0)) < wanted["max_batch"]:
        problems.append(f"max_batch {record.get('max_batch')}, under the {wanted['max_batch']} this model batches")
    return problems


def exported_network(net: torch.nn.Module, half: bool, max_batch: int, size: int, device: torch.device,
                     warm: bool = True) -> "torch.export.ExportedProgram":
    """``PaddedForward`` as one graph for batches of ``max_batch`` rows (``torch.export``).

    One eager call first (``warm``): the Detect head caches its anchor grids for this input shape, so the
    graph holds them as constants. Traced fresh, the head builds them from strides read off a device tensor
    (``.item()``): a synchronisation in every call, which no CUDA graph can capture (seen on the H100 host).
    """
    example = torch.full((max_batch, size, size, 3), PAD_VALUE, dtype=torch.uint8, device=device)
    module = PaddedForward(net, half).eval()
    with torch.no_grad():
        if warm:
            module(example)
        return torch.export.export(module, (example,))


def compiled_forward(net: torch.nn.Module, half: bool, max_batch: int, size: int,
                     device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """``PaddedForward`` compiled by inductor (``COMPILE_MODE``) for batches of exactly ``max_batch`` rows; a smaller
    batch runs padded to it.

    ``torch.export`` first makes the whole network one graph (Ultralytics' module loop would otherwise break
    it into a graph per layer, each recompiled per input shape); inductor compiles that graph. One static
    batch size: with a symbolic one, max-autotune's matmul templates for the head's attention were
    specialised to the size they were tuned at and failed at any other (torch 2.14, "Expected size for first
    two dimensions of batch2 tensor"); and one size is one autotuning. At full load batches are full anyway;
    below it, the GPU computes padding rows. The first call compiles: from the caches the export built, in
    seconds; without them, minutes of autotuning. The export and every instance call this same function, so
    their graphs and cache keys agree.
    """
    compiled = torch.compile(exported_network(net, half, max_batch, size, device).module(), mode=COMPILE_MODE,
                             dynamic=False)

    @torch.no_grad()
    def run(padded_bgr: torch.Tensor) -> torch.Tensor:
        rows = len(padded_bgr)
        if rows < max_batch:
            padded_bgr = torch.cat([padded_bgr, padded_bgr.new_full((max_batch - rows, *padded_bgr.shape[1:]), PAD_VALUE)])
        return compiled(padded_bgr)[:rows]

    run.batch_sizes = [max_batch]  # what GraphedForward captures for it
    return run


def compile_cache_misses() -> int:
    """Graphs inductor had to compile (not found in its caches) in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"].get("fxgraph_cache_miss", 0))


def load_compiled(version_dir: Path, net: torch.nn.Module, device: torch.device, half: bool, max_batch: int,
                  size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The compiled forward (letterboxed uint8 BGR device batch -> head output) from the caches the export built in
    ``version_dir``, after checking they were built from these weights, for this precision, size and batch, by this
    torch on this GPU kind; compiled here from those caches, and refused if that had to compile anything anew."""
    cache, record_path = version_dir / COMPILE_CACHE, version_dir / COMPILED_RECORD
    fix = "build them on this host: yolo11-triton export --profile gpu (docker compose run --rm export)"
    if not cache.exists() or not record_path.exists():
        raise CompiledNetworkError(f"parameter network is compiled but {cache} (or its {COMPILED_RECORD}) is "
                                   f"missing: {fix}; or set network to eager")
    problems = compiled_mismatches(json.loads(record_path.read_text()), compiled_target(net, device, half, max_batch, size))
    if problems:
        raise CompiledNetworkError(f"{cache} was built for something else: {'; '.join(problems)}: {fix}")
    torch.compiler.load_cache_artifacts(cache.read_bytes())
    forward = compiled_forward(net, half, max_batch, size, device)
    before = compile_cache_misses()
    forward(torch.full((max_batch, size, size, 3), PAD_VALUE, dtype=torch.uint8, device=device))
    if compile_cache_misses() > before:
        raise CompiledNetworkError(f"{cache} did not hold this network's compiled graph (inductor compiled it anew): "
                                   f"{fix}")
    return forward
