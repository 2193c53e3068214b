"""Every model config of a repository, built from ``python_models.contract`` and the exported model's ``ModelSpec``.

The export writes them for the model it exported (``repository_files.write_repository``); ``yolo11-triton dev gen-configs``
writes the committed ``model_repository/`` for the default export, and a test fails when a committed config drifts
from what this module builds. The CPU profile derives its configs from the same objects (``cpu_configs``); the map
of tracks to modules is ``track_map``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from python_models import contract as c
from python_models.contract import (  # noqa: F401 - this module's vocabulary
    END2END_ENSEMBLE,
    END2END_TRT,
    NMS,
    PREPROCESS,
    PUBLIC_MODELS,
    SERVED_MODELS,
    PYTORCH,
    RAW_TRT,
    TRACK_A_DECODES,
    TRACK_A_NETWORKS,
    TRT_ENSEMBLE,
    ULTRALYTICS_RAW_TRT,
    dali_end2end_name,
    dali_ensemble_name,
    dali_guard_name,
    dali_preprocess_name,
)


# CPU-side batching of the Python steps; the GPU leaves take the same size so one
# ensemble request never exceeds what a step accepts.
ENSEMBLE_MAX_BATCH = 64
PYTORCH_MAX_BATCH = 32

_DTYPES = {
    np.dtype(np.uint8): mc.TYPE_UINT8,
    np.dtype(np.int32): mc.TYPE_INT32,
    np.dtype(np.float32): mc.TYPE_FP32,
}


DALI_FILE = "dali.py"
"""A DALI leaf's pipeline file in its version folder (``repository_files.version_files`` writes it)."""
RUNTIME = "python_models.runtime.triton."
"""Where the production Python models' adapters live."""
TWINS = "python_models.serving.twins."
"""Where the CPU profile's stand-ins for TensorRT and DALI leaves live."""


@dataclass(frozen=True)
class ModelDefinition:
    config: mc.ModelConfig
    twin: str | None = None
    """For a TensorRT or DALI leaf: the module of its CPU-profile twin (``python_models.serving.twins``)."""
    onnx_source: str | None = None
    """For a TensorRT leaf: the model whose version folder holds the exported ONNX its engine is built from."""
    entry: str | None = None
    """For a Python-backend model: the module its ``model.py`` imports (``python_models.runtime.triton``)."""
    calls: str | None = None
    """The model it calls through BLS (Track D's guard calls its DALI leaf), loaded whenever it is."""
    logic: tuple[str, ...] = ()
    """The modules (under ``python_models/``) that hold what this step does, for the map in docs/tracks.md."""
    cpu_instances: int | None = None
    """The KIND_CPU instances the CPU profile runs instead: for a Python model placed on the GPU (None: one), or for
    a KIND_CPU model sized to a GPU host's cores (None: as production)."""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def calls_leaf(self) -> bool:
        """It calls a leaf through BLS (Track D's guard, its DALI leaf), not a model clients call (the tracking model,
        its detection track): the CPU profile sizes it to that leaf, and the leaf's batches come back through it."""
        return bool(self.calls) and self.calls not in SERVED_MODELS


def _inputs(specs: Iterable[c.TensorSpec], ragged: bool = False, rename: dict[str, str] | None = None):
    rename = rename or {}
    return [
        mc.ModelInput(name=rename.get(s.name, s.name), data_type=_DTYPES[s.dtype], dims=list(s.dims), allow_ragged_batch=ragged)
        for s in specs
    ]


def _outputs(specs: Iterable[c.TensorSpec], rename: dict[str, str] | None = None):
    rename = rename or {}
    return [mc.ModelOutput(name=rename.get(s.name, s.name), data_type=_DTYPES[s.dtype], dims=list(s.dims)) for s in specs]


QUEUE_DEPTH_PER_BATCH = 4
"""Each leaf queues at most this many of its largest batches; past that Triton rejects at once."""
QUEUE_TIMEOUT_US = 5_000_000
"""A request still queued after this long is rejected; clients may ask for less per request."""


def _batching(delay_us: int, max_batch: int) -> mc.ModelDynamicBatching:
    preferred = [b for b in (4, 8, 16, 32, 64, 128) if b <= max_batch]
    # Overload must fail fast and visibly (UNAVAILABLE) instead of queueing without bound.
    policy = mc.ModelQueuePolicy(timeout_action=mc.ModelQueuePolicy.REJECT, default_timeout_microseconds=QUEUE_TIMEOUT_US,
                                 allow_timeout_override=True, max_queue_size=QUEUE_DEPTH_PER_BATCH * max_batch)
    return mc.ModelDynamicBatching(max_queue_delay_microseconds=delay_us, preferred_batch_size=preferred,
                                   default_queue_policy=policy)


def _instances(count: int, kind: int) -> list[mc.ModelInstanceGroup]:
    return [mc.ModelInstanceGroup(count=count, kind=kind)]


def _leaf(name, max_batch, inputs, outputs, instances, delay_us, **runtime: str) -> mc.ModelConfig:
    """A dynamically batched model; ``runtime`` is ``backend=...`` or ``platform=...``."""
    return mc.ModelConfig(
        name=name,
        max_batch_size=max_batch,
        input=inputs,
        output=outputs,
        dynamic_batching=_batching(delay_us, max_batch),
        instance_group=instances,
        **runtime,
    )


def _python(*args) -> mc.ModelConfig:
    return _leaf(*args, backend="python")


def _tensorrt(*args) -> mc.ModelConfig:
    return _leaf(*args, platform="tensorrt_plan")


def _described(config: mc.ModelConfig, spec: c.ModelSpec) -> mc.ModelConfig:
    """The model's facts and thresholds in the ``metadata`` parameter, where Ultralytics' client and our Python
    models read them."""
    config.parameters[c.METADATA].string_value = spec.metadata()
    return config


def _ensemble(name: str, max_batch: int, steps: Sequence[mc.ModelEnsembling.Step], spec: c.ModelSpec) -> mc.ModelConfig:
    return _described(mc.ModelConfig(
        name=name,
        platform="ensemble",
        max_batch_size=max_batch,
        input=_inputs(c.PUBLIC_INPUTS),
        output=_outputs(spec.public_outputs()),
        ensemble_scheduling=mc.ModelEnsembling(step=list(steps)),
    ), spec)


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> mc.ModelEnsembling.Step:
    return mc.ModelEnsembling.Step(model_name=model, model_version=-1, input_map=inputs, output_map=outputs)


_PUBLIC_OUT = {name: name for name in c.PUBLIC_OUTPUT_NAMES}
_PREPROCESSED = {c.LETTERBOXED_IMAGES: c.LETTERBOXED_IMAGES, c.LETTERBOX_TRANSFORM: c.LETTERBOX_TRANSFORM}
_ENGINE_INPUTS = {c.ONNX_INPUT: c.LETTERBOXED_IMAGES, c.LETTERBOX_TRANSFORM: c.LETTERBOX_TRANSFORM}


def _preprocess_outputs(spec: c.ModelSpec) -> tuple[c.TensorSpec, ...]:
    return spec.letterboxed_spec(), c.TRANSFORM_SPEC


def _engine_image(spec: c.ModelSpec) -> c.TensorSpec:
    """The engines' image input: the letterboxed tensor under the exported network's input name."""
    letterboxed = spec.letterboxed_spec()
    return c.TensorSpec(c.ONNX_INPUT, letterboxed.dtype, letterboxed.dims)


WARMUP_IMAGE = "bus.jpg"
"""A real photo from the ultralytics wheel: the DALI leaves warm up nvJPEG on what they will decode."""
WARMUP_TRANSFORM = "identity_transform"


def _warmups(config: mc.ModelConfig) -> list[mc.ModelWarmup]:
    """Warm-up requests at batch 1 and at the largest batch, so the engine's whole profile is initialised
    (and each DALI instance has decoded once) before the first client request."""
    inputs = {}
    for tensor in config.input:
        # Encoded bytes (one ragged row), not an engine's letterboxed uint8 input of the same name.
        if tensor.name == c.INPUT_IMAGES and tuple(tensor.dims) == c.PUBLIC_INPUTS[0].dims:
            inputs[tensor.name] = mc.ModelWarmup.Input(data_type=tensor.data_type, dims=[len(warmup_image())],
                                                       input_data_file=WARMUP_IMAGE)
        elif tensor.name == c.LETTERBOX_TRANSFORM:
            inputs[tensor.name] = mc.ModelWarmup.Input(data_type=tensor.data_type, dims=list(tensor.dims),
                                                       input_data_file=WARMUP_TRANSFORM)
        else:
            inputs[tensor.name] = mc.ModelWarmup.Input(data_type=tensor.data_type, dims=list(tensor.dims), random_data=True)
    sizes = sorted({1, config.max_batch_size})
    return [mc.ModelWarmup(name=f"batch_{b}", batch_size=b, inputs=inputs) for b in sizes]


@functools.lru_cache(maxsize=1)
def warmup_image() -> bytes:
    from ultralytics.utils import ASSETS

    return (ASSETS / WARMUP_IMAGE).read_bytes()


def warmup_files(definition: "ModelDefinition", spec: c.ModelSpec) -> dict[str, bytes]:
    """Files the model's ``warmup/`` folder must hold for its ``model_warmup`` entries."""
    wanted = {i.input_data_file for w in definition.config.model_warmup for i in w.inputs.values() if i.input_data_file}
    files = {}
    if WARMUP_IMAGE in wanted:
        files[WARMUP_IMAGE] = warmup_image()
    if WARMUP_TRANSFORM in wanted:
        # gain 1, no padding, an original of the letterboxed size: boxes pass through unchanged.
        identity = [1, 1, 0, 0, spec.imgsz, spec.imgsz]
        files[WARMUP_TRANSFORM] = np.asarray(identity, dtype="<f4").tobytes()
    return files


def _warmed(config: mc.ModelConfig) -> mc.ModelConfig:
    config.model_warmup.extend(_warmups(config))
    return config


def _end2end(name: str, max_batch: int, delay_us: int, instances: int, spec: c.ModelSpec) -> ModelDefinition:
    config = _tensorrt(name, max_batch, _inputs([_engine_image(spec), c.TRANSFORM_SPEC]), _outputs(spec.public_outputs()),
                       _instances(instances, mc.ModelInstanceGroup.KIND_GPU), delay_us)
    return ModelDefinition(_warmed(config), twin=TWINS + "onnx_twin_model", onnx_source=END2END_TRT,
                           logic=("export/end2end.py",))


PYTORCH_PRECISION = "fp16"
"""Track A's network precision on a GPU (``fp16`` or ``fp32``); the CPU always runs FP32."""
PYTORCH_GPU_INSTANCES = 4
"""Track A instances per GPU: measured best on an H100 (16 cores): 1,529 images/s at p99 141 ms with 4
instances of 8 decode threads, against 585 images/s with 2 (results/h100_fp16_4inst_threads8, README)."""


def _threaded(config: mc.ModelConfig, name: str) -> mc.ModelConfig:
    """A CPU step's threads per instance: "0" shares twice the server's cores out over the host's instances
    (``threads.decode_threads``); a number sets it."""
    config.parameters[name].string_value = "0"
    return config


PYTORCH_DECODE = "gpu"
"""Track A's JPEG decoding on a GPU instance: ``gpu`` (nvJPEG, ``runtime/gpu_decode.py``) or ``cpu`` (OpenCV threads).
Measured on an H100 host (16 cores, 4 instances, yolo11s FP16, concurrency 128): 2,012 images/s at p99 101 ms with
``gpu`` against 1,438 (p99 180 ms) and 1,285 (p99 195 ms) with ``cpu`` in two runs; host CPU 36% busy instead of
69%, the GPU 92% instead of 58% (results/h100_issue16). ``nvimgcodec`` (the hardware decoder, exact libjpeg pixels)
decoded and letterboxed 4,455 images/s in one process against 4,703 for ``gpu`` (H200, batch 32, results/h200_issue25);
served, not yet measured."""
PYTORCH_NETWORK = "compiled"
"""Track A's network on a GPU instance: ``compiled`` (torch.compile from the inductor caches the export builds on the
GPU host, ``export/compiled_network.py``) or ``eager`` (the ``.pt`` module); either replayed from CUDA graphs
(``cuda_graphs``). Measured on an H100 host (16 cores, 4 instances, yolo11s FP16, nvJPEG decoding, same run):
3,235 images/s at p99 57 ms (concurrency 128) compiled against 2,078 at p99 95 ms eager; the forward alone 6,167
against 3,109 images/s (results/h100_issue16). The price is paid at export: about 9 minutes of autotuning on that
host (yolo11s, max batch 32), and about 15 s more per instance at load."""


PYTORCH_NMS = "host"
"""Track A's suppression and packing on a GPU instance: ``host`` (candidates filtered on the device, one copy, per-image
suppression on the host) or ``device`` (``nms.nms_on_device``: the same answers, one copy of them back). Measured on an
H200 (yolo11s fp16, eager network, 4 instances, results/h200_issue25): alone in one process, a batch of 32, the
device path is faster (516 against 323 batches/s); served, it is slower (1,863 against 2,172 images/s at concurrency
192, p50 9.5 against 7.9 ms at concurrency 1), because its few synchronisations per batch each wait behind the other
instances' work on the shared GPU, where the host path waits once."""


@dataclass(frozen=True)
class TrackAOptions:
    """Track A's choices on a GPU instance, its config's parameters (``yolo11-triton export --track-a-decode``,
    ``--track-a-network``); the CPU profile runs ``cpu`` and ``eager`` whatever they say."""

    decode: str = PYTORCH_DECODE
    network: str = PYTORCH_NETWORK

    def __post_init__(self) -> None:
        if self.decode not in c.TRACK_A_DECODES or self.network not in c.TRACK_A_NETWORKS:
            raise ValueError(f"Track A: decode must be one of {c.TRACK_A_DECODES} (not {self.decode!r}) and network one "
                             f"of {c.TRACK_A_NETWORKS} (not {self.network!r})")


def pytorch_config(spec: c.ModelSpec, kind: int = mc.ModelInstanceGroup.KIND_GPU, count: int = PYTORCH_GPU_INSTANCES,
                   precision: str = PYTORCH_PRECISION, decode: str = PYTORCH_DECODE,
                   network: str = PYTORCH_NETWORK) -> mc.ModelConfig:
    """Track A on the GPU (the CPU profile runs it as ``cpu_profile_config`` says). ``decode``: where JPEGs are
    decoded; ``network``: compiled or eager; ``decode_threads`` 0: see ``threads.decode_threads``;
    ``cuda_graphs``: replay the forward from CUDA graphs on a GPU."""
    config = _described(_python(PYTORCH, PYTORCH_MAX_BATCH, _inputs(c.PUBLIC_INPUTS, ragged=True),
                                _outputs(spec.public_outputs()), _instances(count, kind), 2000), spec)
    config.parameters["precision"].string_value = precision
    config.parameters["decode"].string_value = decode
    config.parameters["network"].string_value = network
    config.parameters["nms"].string_value = PYTORCH_NMS
    _threaded(config, "decode_threads")
    config.parameters["cuda_graphs"].string_value = "true"
    return config


GUARD_SPARE_INSTANCES = 1
"""Track D's guard runs one instance more than the DALI leaf it calls: an instance waits for the leaf while its batch
is decoded, so with one per leaf instance plus one, every leaf instance stays fed while another batch is probed."""


def _dali_guard(tier: c.Tier, spec: c.ModelSpec) -> ModelDefinition:
    """The tier's entry step: probes rows, calls the tier's DALI leaf through BLS, sends a batch the leaf failed again
    in halves (``runtime/triton/dali_guard_model.py``). It does the tier's batching (its delay, its queue): the leaf
    decodes each of its calls as sent (``_dali_leaf``)."""
    leaf = dali_preprocess_name(tier)
    config = _python(dali_guard_name(tier), tier.max_batch_size, _inputs(c.PUBLIC_INPUTS, ragged=True),
                     _outputs(_preprocess_outputs(spec)),
                     _instances(tier.instances + GUARD_SPARE_INSTANCES, mc.ModelInstanceGroup.KIND_CPU),
                     tier.max_queue_delay_us)
    config.parameters["dali_model"].string_value = leaf
    return ModelDefinition(config, entry=RUNTIME + "dali_guard_model", calls=leaf, logic=("runtime/decode.py", "runtime/letterbox.py"))


def _dali_leaf(tier: c.Tier, spec: c.ModelSpec) -> mc.ModelConfig:
    """The tier's DALI pipeline. Not dynamically batched: each call of its guard (a batch the guard formed, or part of
    one it isolates) is one DALI batch, so a row DALI fails fails only the call that holds it, and a good row gets
    the pixels it gets alone, whatever other guard instances send meanwhile (the DALI backend fails every request of
    a batch together: ``dali_guard_model``). Its calls are bounded by the guard's instances."""
    dali = _leaf(dali_preprocess_name(tier), tier.max_batch_size, _inputs(c.PUBLIC_INPUTS, ragged=True),
                 _outputs(_preprocess_outputs(spec)), _instances(tier.instances, mc.ModelInstanceGroup.KIND_GPU),
                 tier.max_queue_delay_us, backend="dali")
    dali.ClearField("dynamic_batching")
    # Autoserialised from dali.py at once: left at the default model.dali, which does not exist, the backend first
    # runs that name as Python (not a .py: a traceback in the log at every load) before falling back to dali.py.
    dali.default_model_filename = DALI_FILE
    return _warmed(dali)


PREPROCESS_DECODES = c.TRACK_A_DECODES
"""Where the preprocessing step of tracks B and C decodes (its parameter ``decode``, as Track A's): two KIND_GPU
instances per GPU decoding JPEGs on the GPU and handing the letterboxed batch to the engine on the device, or four
KIND_CPU instances decoding on the host's threads (``runtime/triton/preprocess_model.py``)."""
PREPROCESS_DECODE = "gpu"
"""The step's mode on a GPU host (``yolo11-triton export --preprocess-decode``; the CPU profile runs ``cpu``). Measured
served alone on an H200 (16 cores, concurrency 128, results/h200_issue25), two sessions: 1,965 and 1,546 images/s with
``gpu`` against 1,315 and 1,288 with ``cpu``, p99 106-112 against 191-192 ms; ``nvimgcodec`` 1,272."""
PREPROCESS_INSTANCES = {"gpu": (mc.ModelInstanceGroup.KIND_GPU, 2), "nvimgcodec": (mc.ModelInstanceGroup.KIND_GPU, 2),
                        "cpu": (mc.ModelInstanceGroup.KIND_CPU, 4)}


def preprocess_definition(spec: c.ModelSpec, decode: str = PREPROCESS_DECODE) -> ModelDefinition:
    """Tracks B and C's preprocessing step (``PREPROCESS_DECODES``)."""
    if decode not in PREPROCESS_DECODES:
        raise ValueError(f"the preprocessing step's decode must be one of {PREPROCESS_DECODES}, not {decode!r}")
    kind, count = PREPROCESS_INSTANCES[decode]
    config = _threaded(_python(PREPROCESS, ENSEMBLE_MAX_BATCH, _inputs(c.PUBLIC_INPUTS, ragged=True),
                               _outputs(_preprocess_outputs(spec)), _instances(count, kind), 500), "decode_threads")
    config.parameters["decode"].string_value = decode
    return ModelDefinition(config, entry=RUNTIME + "preprocess_model", logic=("runtime/decode.py", "runtime/gpu_decode.py", "runtime/letterbox.py"),
                           cpu_instances=PREPROCESS_INSTANCES["cpu"][1])


FASTEST_DETECTOR = {"gpu": PYTORCH, "cpu": END2END_ENSEMBLE}
"""The detection track the tracking model calls by default (``--track-detector auto``): the fastest measured on each
profile's host. GPU: Track A served 3,775 images/s on an H200 where tracks B and C's preprocessing step alone served
2,568 (results/h200_issue25; TensorRT could not be measured there). CPU profile, 2 cores, one image a request:
Track C's twin 19.6 images/s at concurrency 1, Track A 10.3, tracks B and D 18.3 and 18.7 (results/cpu_tracking)."""


@dataclass(frozen=True)
class TrackingOptions:
    """The tracking model's choices (``yolo11-triton export --track-detector``, ``--tracker``, ``--track-idle-s``):
    the detection track it calls (``auto``: ``FASTEST_DETECTOR`` of the profile served), Ultralytics' tracker, and
    how long a stream may send nothing before it is let go."""

    detector: str = "auto"
    tracker: str = "bytetrack"
    idle_s: float = 10.0
    """A stream idle this long is freed (Triton frees its slot, the model its tracker): a camera that stalls for
    longer starts its sequence again."""

    def __post_init__(self) -> None:
        if self.detector not in ("auto", *PUBLIC_MODELS):
            raise ValueError(f"the tracking model's detector must be auto or a detection track "
                             f"({', '.join(PUBLIC_MODELS)}), not {self.detector!r}")
        if self.tracker not in c.TRACKERS:
            raise ValueError(f"tracker must be one of {c.TRACKERS}, not {self.tracker!r}")
        if not self.idle_s > 0:
            raise ValueError(f"the idle timeout of a stream must be positive, not {self.idle_s}")

    def for_profile(self, profile: str) -> "TrackingOptions":
        """These options with ``auto`` resolved to the detection track ``profile`` (``gpu`` or ``cpu``) serves fastest."""
        return replace(self, detector=FASTEST_DETECTOR[profile]) if self.detector == "auto" else self


def model_definitions(spec: c.ModelSpec, track_a: TrackAOptions = TrackAOptions(),
                      preprocess_decode: str = PREPROCESS_DECODE,
                      tracking: TrackingOptions = TrackingOptions(), gpus: int = 1) -> list[ModelDefinition]:
    """All models of the repository for the exported model ``spec``, public ensembles and the leaves they call.

    ``metadata`` goes where it is read: every public model (clients), the Ultralytics-form raw leaf (Ultralytics'
    own Triton client) and the NMS step (its thresholds). Leaves that only need the image size
    read it from their own output dims."""
    images = {c.INPUT_IMAGES: c.INPUT_IMAGES}
    raw = spec.raw_spec()
    defs = [
        # Track A: one Python model.
        ModelDefinition(pytorch_config(spec, decode=track_a.decode, network=track_a.network), entry=RUNTIME + "pytorch_model",
                        logic=("runtime/decode.py", "runtime/gpu_decode.py", "runtime/letterbox.py", "runtime/network.py", "runtime/nms.py")),
        # Tracks B and C share the preprocessing step.
        preprocess_definition(spec, preprocess_decode),
        ModelDefinition(
            _warmed(_tensorrt(RAW_TRT, ENSEMBLE_MAX_BATCH, _inputs([_engine_image(spec)]),
                              _outputs([c.TensorSpec(c.ONNX_RAW_OUTPUT, raw.dtype, raw.dims)]),
                              _instances(1, mc.ModelInstanceGroup.KIND_GPU), 1000)),
            twin=TWINS + "onnx_twin_model",
            onnx_source=RAW_TRT,
            logic=("export/artifacts.py",),
        ),
        # Ultralytics' own Triton client (YOLO("grpc://host:8001/yolo11_ultralytics_raw_trt")) sends the network's
        # float32 input: the raw network as Ultralytics exports it, its own engine. Not in any ensemble.
        ModelDefinition(
            _described(_warmed(_tensorrt(ULTRALYTICS_RAW_TRT, ENSEMBLE_MAX_BATCH, _inputs([spec.network_input_spec()]),
                                         _outputs([c.TensorSpec(c.ONNX_RAW_OUTPUT, raw.dtype, raw.dims)]),
                                         _instances(1, mc.ModelInstanceGroup.KIND_GPU), 1000)), spec),
            twin=TWINS + "onnx_twin_model",
            onnx_source=ULTRALYTICS_RAW_TRT,
            logic=("export/artifacts.py",),
        ),
        ModelDefinition(_threaded(_described(_python(NMS, ENSEMBLE_MAX_BATCH, _inputs([raw, c.TRANSFORM_SPEC]),
                                                     _outputs(spec.public_outputs()),
                                                     _instances(2, mc.ModelInstanceGroup.KIND_CPU), 500), spec),
                                  "threads"),
                        entry=RUNTIME + "nms_model", logic=("runtime/nms.py",)),
        ModelDefinition(_ensemble(TRT_ENSEMBLE, ENSEMBLE_MAX_BATCH, [
            _step(PREPROCESS, images, _PREPROCESSED),
            _step(RAW_TRT, {c.ONNX_INPUT: c.LETTERBOXED_IMAGES}, {c.ONNX_RAW_OUTPUT: c.RAW_PREDICTIONS}),
            _step(NMS, {c.RAW_PREDICTIONS: c.RAW_PREDICTIONS, c.LETTERBOX_TRANSFORM: c.LETTERBOX_TRANSFORM}, _PUBLIC_OUT),
        ], spec)),
        _end2end(END2END_TRT, ENSEMBLE_MAX_BATCH, 1000, 1, spec),
        ModelDefinition(_ensemble(END2END_ENSEMBLE, ENSEMBLE_MAX_BATCH, [
            _step(PREPROCESS, images, _PREPROCESSED),
            _step(END2END_TRT, _ENGINE_INPUTS, _PUBLIC_OUT),
        ], spec)),
    ]
    # Track D: per tier, the guard (which calls the DALI leaf) and the End2End engine.
    for tier in c.DALI_TIERS:
        defs += [
            _dali_guard(tier, spec),
            ModelDefinition(_dali_leaf(tier, spec), twin=TWINS + "dali_twin_model", logic=("runtime/dali_letterbox.py",)),
            _end2end(dali_end2end_name(tier), tier.max_batch_size, tier.max_queue_delay_us, tier.instances, spec),
            ModelDefinition(_ensemble(dali_ensemble_name(tier), tier.max_batch_size, [
                _step(dali_guard_name(tier), images, _PREPROCESSED),
                _step(dali_end2end_name(tier), _ENGINE_INPUTS, _PUBLIC_OUT),
            ], spec)),
        ]
    defs.append(track_definition(spec, tracking))
    for definition in defs:
        scale_queue(definition.config, gpus, feeds_gpus=definition.calls_leaf)
    return defs


def scale_queue(config: mc.ModelConfig, gpus: int, feeds_gpus: bool = False) -> None:
    """A KIND_GPU instance group without ``gpus`` puts its instances on every GPU of the serving host, but the queue
    bound is the model's: sized for one GPU's instances, it would refuse requests the other GPUs' instances could
    take (measured: 256 in flight refused on 2 GPUs, results/h200x2_scaling_queue_not_scaled). So it is scaled by the
    serving host's GPUs (``yolo11-triton export --gpus``). ``feeds_gpus``: a model on the CPU that holds the queue of
    one on every GPU (Track D's guard, for its DALI leaf, which does not batch: ``_dali_leaf``)."""
    if gpus < 1:
        raise ValueError(f"a serving host has at least one GPU, not {gpus}")
    policy = config.dynamic_batching.default_queue_policy
    if policy.max_queue_size and (feeds_gpus or any(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in config.instance_group)):
        policy.max_queue_size *= gpus


TRACK_STREAMS = 64
"""Streams one tracking instance holds at once (the sequence batcher's ``max_candidate_sequences``, and its largest
batch: one frame per stream). Streams beyond it wait in Triton's backlog until one ends or goes idle."""
TRACK_INSTANCES = 8
"""Tracking instances on a GPU host (one on the CPU profile's two cores): each a process, each stream pinned to one of
them. An execution waits for the detector's answers to all its frames before the instance takes the next, so more
instances keep more frames in flight: 403, 938 and 1,154 frames/s at 64 streams with 1, 4 and 8 on an H200
(results/h200_issue27), where the trackers themselves cost little."""
TRACK_QUEUE_DELAY_US = 1000
"""How long the sequence batcher waits to gather frames of several streams into one execution."""


def track_definition(spec: c.ModelSpec, options: TrackingOptions = TrackingOptions()) -> ModelDefinition:
    """The tracking model (``runtime/triton/track_model.py``): Triton's sequence batcher, strategy ``oldest`` (a
    stream stays on one instance and its frames come one at a time, in order; the ``direct`` strategy would pad
    batches with empty requests), calling the detection track ``options`` name (``auto``: the GPU profile's) through
    BLS. Its state lives in the Python model (the Python backend has no implicit state); ``TRACK_INSTANCES`` on the
    CPU, where the trackers run. Its input is ragged: frames of different byte lengths batch together (else an execution
    only gathers frames of equal length, a few at most)."""
    detector = options.for_profile("gpu").detector
    oldest = mc.ModelSequenceBatching.StrategyOldest(max_candidate_sequences=TRACK_STREAMS,
                                                     max_queue_delay_microseconds=TRACK_QUEUE_DELAY_US)
    batcher = mc.ModelSequenceBatching(max_sequence_idle_microseconds=round(options.idle_s * 1e6), oldest=oldest)
    config = mc.ModelConfig(name=c.TRACK, backend="python", max_batch_size=TRACK_STREAMS,
                            input=_inputs(c.PUBLIC_INPUTS, ragged=True), output=_outputs(spec.track_outputs()),
                            sequence_batching=batcher,
                            instance_group=_instances(TRACK_INSTANCES, mc.ModelInstanceGroup.KIND_CPU))
    config.parameters["detector"].string_value = detector
    config.parameters["tracker"].string_value = options.tracker
    return ModelDefinition(_described(config, spec), entry=RUNTIME + "track_model", calls=detector,
                           logic=("runtime/tracking.py",), cpu_instances=1)


CONSUME = "yolo11_consume"
PREPROCESS_ONLY = "yolo11_preprocess_only"


def preprocess_only_definitions(spec: c.ModelSpec, decode: str = PREPROCESS_DECODE) -> list[ModelDefinition]:
    """Tracks B and C's preprocessing step (``preprocess_definition``), ending in a step that only consumes its
    output: the images/s that bound those tracks, measured through Triton without gRPC carrying the letterboxed
    tensors back (``yolo11-triton bench preprocess``). Not part of the served repository."""
    consume_config = _python(CONSUME, ENSEMBLE_MAX_BATCH, _inputs(_preprocess_outputs(spec)),
                             _outputs(spec.public_outputs()), _instances(1, mc.ModelInstanceGroup.KIND_CPU), 0)
    # Images the GPU step left on the device stay there, as the engine would take them (the stub copies them to the
    # host otherwise); the consumer reads only the transforms.
    consume_config.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value = "no"
    consume = ModelDefinition(consume_config, entry=RUNTIME + "consume_model")
    ensemble = ModelDefinition(_ensemble(PREPROCESS_ONLY, ENSEMBLE_MAX_BATCH, [
        _step(PREPROCESS, {c.INPUT_IMAGES: c.INPUT_IMAGES}, _PREPROCESSED),
        _step(CONSUME, _PREPROCESSED, _PUBLIC_OUT),
    ], spec))
    return [preprocess_definition(spec, decode), consume, ensemble]


def definitions_by_name(spec: c.ModelSpec, track_a: TrackAOptions = TrackAOptions(),
                        preprocess_decode: str = PREPROCESS_DECODE,
                        tracking: TrackingOptions = TrackingOptions(), gpus: int = 1) -> dict[str, ModelDefinition]:
    return {d.name: d for d in model_definitions(spec, track_a, preprocess_decode, tracking, gpus)}


@functools.lru_cache(maxsize=1)
def default_spec() -> c.ModelSpec:
    """What exporting ``weights.DEFAULT_WEIGHTS`` (yolo11n.pt) produces (COCO's 80 classes, strides 8 to 32, 640,
    default thresholds):
    the committed ``model_repository/``. The names are the COCO dataset file's, which those weights carry."""
    import ultralytics
    import yaml

    coco = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg" / "datasets" / "coco.yaml").read_text())
    names = coco["names"]
    return c.ModelSpec(names=tuple(names[i] for i in range(len(names))))


def leaf_models(ensemble: mc.ModelConfig) -> list[str]:
    return [step.model_name for step in ensemble.ensemble_scheduling.step]


def request_path(public: str, definitions: dict[str, ModelDefinition]) -> list[str]:
    """The models one request to ``public`` runs through, in order: its ensemble steps (itself when it is none),
    each followed by the model it calls through BLS (Track D's guard, then its DALI leaf)."""
    config = definitions[public].config
    steps = leaf_models(config) if config.platform == "ensemble" else [public]
    return [name for step in steps for name in (step, definitions[step].calls) if name]


SERVED_BESIDE = {TRT_ENSEMBLE: (ULTRALYTICS_RAW_TRT,)}
"""Models served whenever a public model is, outside its ensemble: Track B's network in the form Ultralytics'
own Triton client calls."""


def models_behind(public: str, definitions: dict[str, ModelDefinition]) -> list[str]:
    """Every model a public model needs loaded (and, for TensorRT leaves, built): its steps, what they call, and what
    is served beside it."""
    definition = definitions[public]
    if definition.config.platform == "ensemble":
        steps = request_path(public, definitions)
    elif definition.calls and not definition.calls_leaf:  # the tracking model: the detection track and all it needs
        steps = [definition.calls, *models_behind(definition.calls, definitions)]
    else:
        steps = []
    return [*steps, *SERVED_BESIDE.get(public, ())]


