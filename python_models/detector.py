"""Weights: resolve what the user names, or build a deterministic untrained YOLO11 that still detects."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from python_models.contract import CONF_THRESHOLD, IMAGE_SIZE, NUM_CLASSES, PAD_VALUE

DEFAULT_WEIGHTS = "yolo11n.pt"
UNTRAINED_CONFIG = "yolo11n.yaml"
UNTRAINED_SEED = 0
UNTRAINED_QUANTILE = 0.997
"""Share of each calibration image's anchors whose best class clears the confidence threshold."""
UNTRAINED_BN_GAIN = 0.1
"""BatchNorm scale of the untrained network: keeps every SiLU in its near-linear range."""
UNTRAINED_LOGIT_SPREAD = 0.5
"""Standard deviation, across anchors, of each calibration image's best-class logit: its detections then score
from 0.25 to about 0.55 (bus.jpg), not all within 0.002 of the threshold, where a matcher must let them differ."""


class WeightsError(RuntimeError):
    """Weights could not be resolved or do not fit the serving contract."""


def calibration_images() -> list[np.ndarray]:
    """The two sample images the ultralytics wheel ships, and their mirror images (BGR)."""
    import cv2
    from ultralytics.utils import ASSETS

    images = [cv2.imread(str(ASSETS / name)) for name in ("bus.jpg", "zidane.jpg")]
    return images + [cv2.flip(image, 1) for image in images]


def untrained_detector(config: str = UNTRAINED_CONFIG, seed: int = UNTRAINED_SEED):
    """An untrained YOLO11 whose outputs depend on the image, built the same way every time.

    A freshly initialised network's activations vanish through its depth (BatchNorm
    running statistics start at mean 0, variance 1) and its class bias keeps every
    score near 1e-4, so it returns nothing at a 0.25 threshold and the same boxes for
    every image. Re-estimating BatchNorm statistics on the shipped sample images and
    setting the class bias so a fixed share of anchors clears the threshold gives an
    image-dependent detector: enough to prove every track returns what the reference
    predictor returns, not a useful model.

    With BatchNorm's scale left at 1 that network is chaotic: a one-grey-level
    difference in a few pixels (DALI's decode and resize against OpenCV's) moved
    scores by 0.26 and boxes by 20 px, so no tolerance could compare Track D with
    Track A. Scaling every BatchNorm by ``UNTRAINED_BN_GAIN`` keeps activations where
    SiLU is nearly linear, making the network a smooth function of the image, as a
    trained one is near real images: the same difference then moves scores by 7e-5.
    """
    from ultralytics import YOLO

    from python_models.letterbox import letterbox

    torch.manual_seed(seed)
    model = YOLO(config)
    net = model.model
    head = net.model[-1]
    if head.nc != NUM_CLASSES:
        raise WeightsError(f"{config} has {head.nc} classes; the serving contract has {NUM_CLASSES}")
    batch = torch.from_numpy(np.stack([letterbox(image)[0] for image in calibration_images()]))
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
            if module.weight is not None:
                with torch.no_grad():
                    module.weight.fill_(UNTRAINED_BN_GAIN)
    class_convs = [branch[-1] for branch in head.cv3]

    def best_logits() -> torch.Tensor:
        scores = net(batch)
        scores = scores[0] if isinstance(scores, (list, tuple)) else scores
        return torch.logit(scores[:, 4:].amax(1).double().clamp(1e-12, 1 - 1e-12))

    with torch.no_grad():
        net.train()
        net(batch)
        net.eval()
        for conv in class_convs:
            conv.bias.zero_()
        # The class logits are linear in the last convolutions' weights: scale them to the wanted spread.
        gain = UNTRAINED_LOGIT_SPREAD / best_logits().std(dim=1).mean().item()
        for conv in class_convs:
            conv.weight.mul_(gain)
        level = torch.quantile(best_logits(), UNTRAINED_QUANTILE, dim=1).mean()
        shift = math.log(CONF_THRESHOLD / (1 - CONF_THRESHOLD)) - level.item()
        for conv in class_convs:
            conv.bias.fill_(shift)
    return model


@dataclass(frozen=True)
class ResolvedWeights:
    model: object
    """The Ultralytics ``YOLO`` object."""
    untrained: bool
    source: str
    """The file the weights came from, or the network definition."""
    fallback_reason: str | None = None
    """Why the weights asked for could not be used, when the untrained network stands in for them."""


def _is_name(weights: str) -> bool:
    """A bare file name such as ``yolo11s.pt``: Ultralytics can download it. A path names a file that must exist."""
    return Path(weights).name == weights and weights.endswith(".pt")


def _load(path: Path) -> object:
    from ultralytics import YOLO

    try:
        return YOLO(str(path))
    except Exception as exc:  # a corrupt or foreign file raises many types
        raise WeightsError(f"{path} could not be loaded as Ultralytics weights: {type(exc).__name__}: {exc}") from exc


def _fetch(name: str, weights_dir: Path) -> Path:
    """``weights_dir / name``, downloading it there first if needed; a clear error when that cannot happen."""
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    target = weights_dir / name
    if target.is_file():
        return target
    if name not in GITHUB_ASSETS_NAMES:
        raise WeightsError(f"{name!r} is neither a file nor a weights name Ultralytics publishes (a typo?)")
    if os.environ.get("YOLO_OFFLINE"):
        raise WeightsError(f"{name} is not in {weights_dir} and YOLO_OFFLINE is set, so it cannot be downloaded")
    try:
        weights_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create {weights_dir} to download {name} into: {exc}") from exc
    if not os.access(weights_dir, os.W_OK):
        raise WeightsError(f"cannot download {name}: {weights_dir} is not writable by uid {os.getuid()}")
    try:
        attempt_download_asset(str(target))
    except Exception as exc:  # network errors surface as many types
        raise WeightsError(f"downloading {name} into {weights_dir} failed: {type(exc).__name__}: {exc}") from exc
    if not target.is_file():
        raise WeightsError(f"downloading {name} into {weights_dir} failed (no network?); "
                           f"put the file there yourself or pass a path")
    return target


def resolve_weights(weights: str, weights_dir: Path | None = None, allow_untrained: bool = False) -> ResolvedWeights:
    """The weights a user names: a ``.pt`` path, a name Ultralytics publishes, or a ``.yaml`` network.

    A ``.yaml`` is an explicit request for the deterministic untrained network
    (``untrained_detector``). A name (``yolo11s.pt``) is looked up in ``weights_dir``
    (default: the current directory) and downloaded there when missing. Anything that
    cannot be resolved raises ``WeightsError`` with the reason (no such file, a typo'd
    name, offline, an unwritable folder, a file Ultralytics cannot load), unless
    ``allow_untrained``, which serves the untrained network instead and says why.
    """
    if weights.endswith((".yaml", ".yml")):
        return ResolvedWeights(untrained_detector(weights), True, weights)
    try:
        if _is_name(weights) and not Path(weights).is_file():
            path = _fetch(weights, Path(weights_dir) if weights_dir else Path.cwd())
        else:
            path = Path(weights)
            if not path.is_file():
                raise WeightsError(f"no such weights file: {path}")
        model = _load(path)
    except WeightsError as exc:
        if not allow_untrained:
            raise
        return ResolvedWeights(untrained_detector(), True, UNTRAINED_CONFIG, fallback_reason=str(exc))
    nc = len(model.names)
    if nc != NUM_CLASSES:
        raise WeightsError(
            f"{weights} detects {nc} classes; python_models/contract.py serves {NUM_CLASSES}. "
            "Set NUM_CLASSES there and run tools/gen_configs.py."
        )
    return ResolvedWeights(model, False, str(path))


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


def warm_up(net: torch.nn.Module, device: torch.device, half: bool, max_batch: int) -> None:
    """Run every batch size up to ``max_batch`` once, so cuDNN's per-shape autotuning happens now."""
    if device.type != "cuda":
        return
    for batch in range(1, max_batch + 1):
        forward_padded(net, torch.full((batch, IMAGE_SIZE, IMAGE_SIZE, 3), PAD_VALUE, dtype=torch.uint8), device, half)
    torch.cuda.synchronize(device)


def graph_batch_sizes(max_batch: int) -> list[int]:
    """Powers of two up to ``max_batch``, and ``max_batch``: a batch runs in the smallest that holds it."""
    sizes = {max_batch}
    size = 1
    while size < max_batch:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


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

    def __init__(self, net: torch.nn.Module, device: torch.device, half: bool, max_batch: int) -> None:
        self.sizes = graph_batch_sizes(max_batch)
        self.graphs: dict[int, tuple[torch.Tensor, torch.cuda.CUDAGraph, torch.Tensor]] = {}
        pool = torch.cuda.graph_pool_handle()  # one memory pool: the graphs never run at the same time
        stream = torch.cuda.Stream(device)
        for size in reversed(self.sizes):  # largest first, so the smaller ones fit in its memory
            static_in = torch.full((size, IMAGE_SIZE, IMAGE_SIZE, 3), PAD_VALUE, dtype=torch.uint8, device=device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):  # warm (cuDNN autotuning) off the capture, as capture requires
                for _ in range(2):
                    forward_padded(net, static_in, device, half)
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                static_out = forward_padded(net, static_in, device, half)
            self.graphs[size] = (static_in, graph, static_out)
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
