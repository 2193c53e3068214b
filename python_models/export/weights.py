"""Weights: resolve what the user names, or build the deterministic untrained YOLO11 that still detects; what the
exported model is (``model_spec``), and which models can be served at all."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from python_models.contract import DEFAULT_CONF, DEFAULT_IMAGE_SIZE, ModelSpec

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
    """Weights could not be resolved or cannot be served."""


class UnservableModel(WeightsError):
    """The weights load, but no track can serve that kind of model."""


SUPPORTED = ("Ultralytics detection models with the anchor-free YOLOv8/YOLO11 head (yolov8*, yolo11* and models "
             "fine-tuned from them), any class count, at an image size that is a multiple of the head's largest "
             "stride")


def check_servable(model) -> None:
    """Refuse what the tracks cannot serve, saying what can: other tasks (segmentation, pose, OBB, classification),
    NMS-free end-to-end heads (YOLOv10, YOLO26), whose outputs are already suppressed and laid out differently."""
    from ultralytics.nn.modules.head import Detect

    net = model.model
    head = net.model[-1] if hasattr(net, "model") else None
    if model.task != "detect" or head is None or not isinstance(head, Detect):
        raise UnservableModel(f"a {model.task!r} model ({type(head).__name__} head) cannot be served; supported: {SUPPORTED}")
    if type(head) is not Detect or getattr(head, "one2one_cv2", None) is not None:
        raise UnservableModel(f"the {type(head).__name__} head is NMS-free end-to-end (YOLOv10/YOLO26 style), not the "
                           f"YOLOv8/YOLO11 head every track here decodes and suppresses; supported: {SUPPORTED}")


def model_spec(model, imgsz: int = DEFAULT_IMAGE_SIZE, conf: float = DEFAULT_CONF, iou: float | None = None,
               max_det: int | None = None) -> ModelSpec:
    """What serving ``model`` at ``imgsz`` with these thresholds means for every track (``WeightsError`` if it
    cannot be served)."""
    check_servable(model)
    strides = tuple(int(s) for s in model.model.stride.tolist())
    names = model.names
    extra = {k: v for k, v in (("iou", iou), ("max_det", max_det)) if v is not None}
    try:
        return ModelSpec(names=tuple(str(names[i]) for i in range(len(names))), imgsz=imgsz, strides=strides,
                         conf=conf, **extra)
    except ValueError as exc:
        raise UnservableModel(str(exc)) from None


def calibration_images() -> list[np.ndarray]:
    """The two sample images the ultralytics wheel ships, and their mirror images (BGR)."""
    import cv2
    from ultralytics.utils import ASSETS

    images = [cv2.imread(str(ASSETS / name)) for name in ("bus.jpg", "zidane.jpg")]
    return images + [cv2.flip(image, 1) for image in images]


def untrained_detector(config: str = UNTRAINED_CONFIG, seed: int = UNTRAINED_SEED, imgsz: int = DEFAULT_IMAGE_SIZE,
                       conf: float = DEFAULT_CONF):
    """An untrained YOLO11 whose outputs depend on the image, built the same way every time.

    A freshly initialised network's activations vanish through its depth (BatchNorm
    running statistics start at mean 0, variance 1) and its class bias keeps every
    score near 1e-4, so it returns nothing at a 0.25 threshold and the same boxes for
    every image. Re-estimating BatchNorm statistics on the shipped sample images and
    setting the class bias so a fixed share of anchors clears the threshold gives an
    image-dependent detector: enough to prove every track returns what the reference
    predictor returns, not a useful model. It is calibrated at ``imgsz`` and ``conf``, the size and
    threshold it will be served at. Class names come from the file's ``names`` when it has them.

    With BatchNorm's scale left at 1 that network is chaotic: a one-grey-level
    difference in a few pixels (DALI's decode and resize against OpenCV's) moved
    scores by 0.26 and boxes by 20 px, so no tolerance could compare Track D with
    Track A. Scaling every BatchNorm by ``UNTRAINED_BN_GAIN`` keeps activations where
    SiLU is nearly linear, making the network a smooth function of the image, as a
    trained one is near real images: the same difference then moves scores by 7e-5.
    """
    from ultralytics import YOLO

    from python_models.runtime.letterbox import letterbox

    torch.manual_seed(seed)
    try:
        model = YOLO(config)
    except Exception as exc:  # a missing or malformed file raises many types
        raise WeightsError(f"{config} could not be built as an Ultralytics network: {type(exc).__name__}: {exc}") from exc
    model_spec(model, imgsz, conf)  # refuses an unservable model or size before the calibration runs
    net = model.model
    head = net.model[-1]
    names = net.yaml.get("names")
    if names is not None:  # Ultralytics numbers an untrained network's classes; the file may name them
        names = dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}
        if sorted(names) != list(range(head.nc)):
            raise WeightsError(f"{config}: names must give one name to each of its {head.nc} classes, got {len(names)}")
        net.names = {i: str(names[i]) for i in range(head.nc)}
    batch = torch.from_numpy(np.stack([letterbox(image, imgsz)[0] for image in calibration_images()]))
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
        shift = math.log(conf / (1 - conf)) - level.item()
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


def resolve_weights(weights: str, weights_dir: Path | None = None, allow_untrained: bool = False,
                    imgsz: int = DEFAULT_IMAGE_SIZE, conf: float = DEFAULT_CONF) -> ResolvedWeights:
    """The weights a user names: a ``.pt`` path, a name Ultralytics publishes, or a ``.yaml`` network.

    A ``.yaml`` is an explicit request for the deterministic untrained network
    (``untrained_detector``). A name (``yolo11s.pt``) is looked up in ``weights_dir``
    (default: the current directory) and downloaded there when missing. Anything that
    cannot be resolved raises ``WeightsError`` with the reason (no such file, a typo'd
    name, offline, an unwritable folder, a file Ultralytics cannot load), unless
    ``allow_untrained``, which serves the untrained network instead and says why. A model
    that cannot be served (``check_servable``) always raises.
    """
    if weights.endswith((".yaml", ".yml")):
        return ResolvedWeights(untrained_detector(weights, imgsz=imgsz, conf=conf), True, weights)
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
        return ResolvedWeights(untrained_detector(imgsz=imgsz, conf=conf), True, UNTRAINED_CONFIG,
                               fallback_reason=str(exc))
    check_servable(model)
    return ResolvedWeights(model, False, str(path))
