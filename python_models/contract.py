"""The one definition of what every public model takes and returns.

Model names, tensor names and types, the DALI tiers and the defaults are constants here.
What depends on the exported detector (its classes and names, the image size, the
thresholds, and so the shapes) is one ``ModelSpec``: the export makes it from the
weights, every model config states it (``metadata``), the Python models and clients read
it from there. Model configs (``python_models.export.repository``), the Python models,
the ONNX exports and the tests all read these values; nothing else states them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_IMAGE_SIZE = 640
"""Square network input side when the export is not told otherwise; letterboxing pads every image to it."""

PAD_VALUE = 114
"""Letterbox border colour, as in Ultralytics' ``LetterBox``."""

DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.45
DEFAULT_MAX_DET = 100
"""Thresholds every track applies unless the export is given others (``--conf``, ``--iou``, ``--max-det``)."""

MAX_IMAGE_PIXELS = 40_000_000
"""Images whose header claims more pixels are rejected before decoding."""
MAX_IMAGE_BYTES = 8 * MAX_IMAGE_PIXELS + 2**20
"""Rows longer than this (after the zeros that pad a request's rows) are rejected before their header is read: no
image within the pixel limit is longer, stored raw at 16 bits in four channels plus its headers, so a longer row is
not an image this service serves (and its bytes would only cost memory and time in every step)."""

# Model names. The public ones are what clients call; the leaves appear in Triton's metrics.
PYTORCH = "yolo11_pytorch"
TRT_ENSEMBLE = "yolo11_trt"
END2END_ENSEMBLE = "yolo11_trt_end2end"
PREPROCESS = "yolo11_preprocess"
RAW_TRT = "yolo11_raw_trt"
ULTRALYTICS_RAW_TRT = "yolo11_ultralytics_raw_trt"
"""The raw network as Ultralytics exports it (float32 NCHW in [0, 1]): what Ultralytics' own Triton client sends."""
NMS = "yolo11_nms"
TRACK_A_DECODES = ("gpu", "nvimgcodec", "cpu")
"""Where Track A (and tracks B/C's preprocessing step) decode JPEGs (parameter ``decode``): nvJPEG on the GPU's SMs
(torchvision), the GPU's hardware JPEG decoder (nvImageCodec, which leaves the SMs to the network), or OpenCV on the
host's threads."""
TRACK_A_NMS = ("device", "host")
"""Where a Track A instance on a GPU suppresses and packs (its parameter ``nms``): on the GPU, or on the host."""
TRACK_A_UNSTATED = {"precision": "fp16", "decode": "cpu", "nms": "host"}
"""What a Track A instance on a GPU runs when its config does not state the parameter (the export always states it;
a client reading the served config falls back to the same)."""
TRACK_A_NETWORKS = ("compiled", "eager")
"""How Track A runs its network (its parameter ``network``): compiled ahead of serving, or the ``.pt`` module."""
END2END_TRT = "yolo11_end2end_plan"
"""Track C's engine (and, with a tier's name after it, each Track D tier's): a leaf, named for what it is (a TensorRT
plan) so that it does not read as the public ``yolo11_trt_end2end`` with its words swapped."""

TRACK = "yolo11_track"
"""Video streams: a stateful model (Triton's sequence batcher, one sequence per stream) that follows the objects a
detection track finds from frame to frame, and answers that track's outputs plus ``track_ids``."""
TRACKERS = ("bytetrack", "botsort")
"""Ultralytics' trackers the tracking model can run (its parameter ``tracker``); BoT-SORT without ReID."""
TRACK_STREAMS_METRIC = "yolo11_track_streams"
"""Gauge on Triton's metrics endpoint (labels ``model``, ``instance``): the streams a tracking instance holds."""
TRACK_OBJECTS_METRIC = "yolo11_track_objects"
"""Gauge (same labels): the tracks those streams' trackers hold (followed, lost and recently removed): what a
stream's memory is made of (about 18 MB per 1,000 removed tracks, Ultralytics' limit per stream)."""

# Public I/O, identical for every track.
INPUT_IMAGES = "images"
OUTPUT_NUM_DETECTIONS = "num_detections"
OUTPUT_BOXES = "detection_boxes"
OUTPUT_SCORES = "detection_scores"
OUTPUT_CLASSES = "detection_classes"
OUTPUT_TRACK_IDS = "track_ids"
"""The tracking model's extra output: per detection row its track ID (from 1 in each stream), -1 for none yet."""

# Tensors that pass between the steps of an ensemble.
LETTERBOXED_IMAGES = "letterboxed_images"
LETTERBOX_TRANSFORM = "letterbox_transform"
RAW_PREDICTIONS = "raw_predictions"
ONNX_INPUT = "images"
ONNX_RAW_OUTPUT = "output0"

TRANSFORM_FIELDS = ("gain_x", "gain_y", "pad_x", "pad_y", "width", "height")
"""Layout of ``letterbox_transform``: original = (letterboxed - pad) / gain, clipped to width x height."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    dims: tuple[int, ...]
    """Per-row shape, without the batch dimension."""


PUBLIC_INPUTS = (TensorSpec(INPUT_IMAGES, np.dtype(np.uint8), (-1,)),)
PUBLIC_OUTPUT_NAMES = (OUTPUT_NUM_DETECTIONS, OUTPUT_BOXES, OUTPUT_SCORES, OUTPUT_CLASSES)
TRANSFORM_SPEC = TensorSpec(LETTERBOX_TRANSFORM, np.dtype(np.float32), (len(TRANSFORM_FIELDS),))

METADATA = "metadata"
"""The config parameter holding ``ModelSpec.metadata()``: the key Ultralytics' ``TritonRemoteModel`` reads."""


@dataclass(frozen=True)
class ModelSpec:
    """What the exported detector is and what every track applies: one per export.

    The export derives it from the weights and its options; every public model's config
    (and the raw leaf's, and the NMS step's) states it in its ``metadata`` parameter, in
    the form Ultralytics' Triton client reads, and the Python models read it from there.
    Tensor shapes that depend on it are its methods, so no module restates a size.
    """

    names: tuple[str, ...]
    """Class names in class-index order; their count is the class count."""
    imgsz: int = DEFAULT_IMAGE_SIZE
    strides: tuple[int, ...] = (8, 16, 32)
    """The detection head's strides: one anchor grid per stride."""
    conf: float = DEFAULT_CONF
    iou: float = DEFAULT_IOU
    max_det: int = DEFAULT_MAX_DET

    def __post_init__(self) -> None:
        problems = []
        if not self.names:
            problems.append("no class names")
        if not self.strides or self.imgsz <= 0 or self.imgsz % max(self.strides):
            problems.append(f"image size {self.imgsz} is not a positive multiple of the largest stride "
                            f"{max(self.strides, default=0)}")
        if not 0 < self.conf < 1 or not 0 < self.iou <= 1:
            problems.append(f"conf {self.conf} must lie in (0, 1) and iou {self.iou} in (0, 1]")
        if self.max_det < 1:
            problems.append(f"max_det {self.max_det} must be at least 1")
        if problems:
            raise ValueError("invalid model spec: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def stride(self) -> int:
        return max(self.strides)

    @property
    def num_anchors(self) -> int:
        """Candidate boxes the head emits per image (8400 at 640 with strides 8, 16, 32)."""
        return sum((self.imgsz // s) ** 2 for s in self.strides)

    def public_outputs(self) -> tuple[TensorSpec, ...]:
        """What every public model returns per image: ``max_det`` rows, the first ``num_detections`` filled."""
        return (
            TensorSpec(OUTPUT_NUM_DETECTIONS, np.dtype(np.int32), (1,)),
            TensorSpec(OUTPUT_BOXES, np.dtype(np.float32), (self.max_det, 4)),
            TensorSpec(OUTPUT_SCORES, np.dtype(np.float32), (self.max_det,)),
            TensorSpec(OUTPUT_CLASSES, np.dtype(np.int32), (self.max_det,)),
        )

    def track_outputs(self) -> tuple[TensorSpec, ...]:
        """What the tracking model returns per frame: the public outputs, and a track ID per detection row."""
        return (*self.public_outputs(), TensorSpec(OUTPUT_TRACK_IDS, np.dtype(np.int32), (self.max_det,)))

    def letterboxed_spec(self) -> TensorSpec:
        """What preprocessing hands an engine: the letterboxed image as uint8 RGB, height x width x channels.

        A quarter of the bytes of the network's float32 input: the exported graphs cast, scale by 1/255 and
        transpose on entry (``python_models.export.end2end.uint8_input_graph``), in the float32 steps
        ``letterbox.network_input`` takes on the CPU."""
        return TensorSpec(LETTERBOXED_IMAGES, np.dtype(np.uint8), (self.imgsz, self.imgsz, 3))

    def network_input_spec(self) -> TensorSpec:
        """The network's own input as Ultralytics exports and feeds it: float32 RGB CHW in [0, 1]."""
        return TensorSpec(ONNX_INPUT, np.dtype(np.float32), (3, self.imgsz, self.imgsz))

    def raw_spec(self) -> TensorSpec:
        return TensorSpec(RAW_PREDICTIONS, np.dtype(np.float32), (4 + self.num_classes, self.num_anchors))

    def metadata(self) -> str:
        """The ``metadata`` parameter: a Python literal, as Ultralytics' exports write it and its client parses it."""
        return repr({
            "description": "Ultralytics YOLO detector served by Triton (yolo11-triton)",
            "task": "detect",
            "stride": self.stride,
            "strides": list(self.strides),
            "batch": 1,
            "imgsz": [self.imgsz, self.imgsz],
            "names": dict(enumerate(self.names)),
            "channels": 3,
            "conf": self.conf,
            "iou": self.iou,
            "max_det": self.max_det,
        })

    @classmethod
    def from_metadata(cls, text: str) -> "ModelSpec":
        import ast

        meta = ast.literal_eval(text)
        names = meta["names"]
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"class indices in the metadata are not 0..{len(names) - 1}")
        imgsz = meta["imgsz"]
        if imgsz[0] != imgsz[1]:
            raise ValueError(f"non-square image size {imgsz}")
        return cls(names=tuple(names[i] for i in range(len(names))), imgsz=int(imgsz[0]),
                   strides=tuple(int(s) for s in meta["strides"]), conf=float(meta["conf"]),
                   iou=float(meta["iou"]), max_det=int(meta["max_det"]))

    @classmethod
    def from_config(cls, config: dict) -> "ModelSpec":
        """From a model config as JSON (what a Python model's ``initialize`` gets, or the server's config API)."""
        try:
            text = config["parameters"][METADATA]["string_value"]
        except KeyError:
            raise ValueError(f"model {config.get('name')!r} has no {METADATA!r} parameter; "
                             "regenerate the repository with yolo11-triton export") from None
        return cls.from_metadata(text)


@dataclass(frozen=True)
class Tier:
    """Batching settings of one Track D tier (its DALI and TensorRT leaves share them)."""

    name: str
    max_batch_size: int
    max_queue_delay_us: int
    instances: int


DALI_TIERS = (
    Tier("streaming", max_batch_size=8, max_queue_delay_us=100, instances=3),
    Tier("balanced", max_batch_size=64, max_queue_delay_us=500, instances=2),
    Tier("batch", max_batch_size=128, max_queue_delay_us=5000, instances=1),
)


def dali_guard_name(tier: Tier) -> str:
    """Track D's first step: probes the rows, calls the tier's DALI leaf, isolates a batch the leaf failed."""
    return f"yolo11_dali_guard_{tier.name}"


DALI_CPU_FALLBACK_METRIC = "yolo11_dali_cpu_fallback_rows"
"""Counter on Triton's metrics endpoint (labels ``model``: the guard, ``dali_model``: its leaf): rows Track D decoded
on the CPU because the DALI leaf refused them on their own (damage only a decoder finds)."""
DALI_LEAF_READY_METRIC = "yolo11_dali_leaf_ready"
"""Gauge (same labels): 1 while the DALI leaf the guard calls is loaded, 0 when it is not (it failed to load): Track D
then answers UNAVAILABLE naming the leaf, and the launcher no longer serves that tier's public model."""


def dali_preprocess_name(tier: Tier) -> str:
    return f"yolo11_dali_preprocess_{tier.name}"


def dali_end2end_name(tier: Tier) -> str:
    return f"{END2END_TRT}_{tier.name}"


def dali_ensemble_name(tier: Tier) -> str:
    return f"yolo11_dali_{tier.name}"


PUBLIC_MODELS = (PYTORCH, TRT_ENSEMBLE, END2END_ENSEMBLE, *(dali_ensemble_name(t) for t in DALI_TIERS))
"""Every track, in the order the docs and reports list them."""
SERVED_MODELS = (*PUBLIC_MODELS, TRACK)
"""What a client can call: the detection tracks, and the tracking model for video streams (a sequence per stream)."""
