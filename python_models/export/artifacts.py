"""Turn weights into the artifacts every track serves: the ``.pt`` for Track A, ONNX for the engines, and the model
configs of the repository, all for one ``ModelSpec`` (the weights' classes and names, the image size, the thresholds).

Three ONNX graphs: the raw network reading uint8 images (Track B's engine), the End2End graph built on
it (``python_models.export.end2end``: NMS and un-letterbox inside), which Track C's and
every Track D tier's engines are built from, and the raw network as Ultralytics exports it (float32
CHW), for Ultralytics' own Triton client.

Artifacts land in the model folders of a repository root (``artifacts/`` of the checkout by
default, which git ignores), where Triton, the CPU twins and the TensorRT builder read them. Beside each
FP32 graph lies its FP16 form (``model_fp16.onnx``, ``end2end.fp16_graph``), which FP16
engines are built from. A manifest skips re-exporting unchanged weights and options, but
never treats an untrained stand-in as the weights that were asked for. Everything is
written beside its target first and moved into place only once all of it was made: a
refused or failed export leaves the repository as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from python_models.export import repository as repo
from python_models.export import repository_files
from python_models.export.deployment import gpu_count
from python_models.contract import DEFAULT_CONF, DEFAULT_IMAGE_SIZE, DEFAULT_IOU, DEFAULT_MAX_DET, TRACKERS, ModelSpec

ARTIFACTS_DIR = "artifacts"
"""The export's repository, under the checkout (the tools' default ``--artifacts``; in the containers
/opt/yolo11-triton/artifacts): ignored by git, so that running never rewrites the committed ``model_repository/``,
which is the default export's configs for reading and review (yolo11-triton dev gen-configs)."""
MANIFEST = "export.json"
EXPORT_COMPLETE = "export_complete.json"
"""Written by yolo11-triton export as its last step, only when everything the profile needs was built (removed while
an export runs): what a serving pod on Kubernetes waits for (deploy/kubernetes)."""
EXPORT_FORMAT_VERSION = 5
"""Bump when what the export writes changes, so old artifacts are rebuilt."""


FP16_ONNX = "model_fp16.onnx"


class RepositoryNotWritable(RuntimeError):
    """The export cannot write where it must; raised before any work is done."""


@dataclass(frozen=True)
class ExportOptions:
    """What the export is told besides the weights; every track applies them, Track A its own ``track_a`` too, and
    tracks B and C their preprocessing step's ``preprocess_decode``."""

    imgsz: int = DEFAULT_IMAGE_SIZE
    conf: float = DEFAULT_CONF
    iou: float = DEFAULT_IOU
    max_det: int = DEFAULT_MAX_DET
    track_a: repo.TrackAOptions = repo.TrackAOptions()
    preprocess_decode: str = repo.PREPROCESS_DECODE
    tracking: repo.TrackingOptions = repo.TrackingOptions()
    gpus: int = 1
    """The serving host's GPUs: the queue bounds of the models placed on every GPU scale with them."""

    @staticmethod
    def add_arguments(parser) -> None:
        """``--imgsz``, ``--conf``, ``--iou``, ``--max-det``, ``--track-a-decode``, ``--track-a-network``,
        ``--preprocess-decode`` on an ``argparse`` parser (yolo11-triton export, serve.py).

        Each defaults to ``$YOLO11_IMGSZ`` (...) when set and not empty (docker compose passes them), else to the
        contract's default."""

        def default(variable: str, kind, fallback):
            value = os.environ.get(variable, "").strip()
            return kind(value) if value else fallback

        parser.add_argument("--imgsz", type=int, default=default("YOLO11_IMGSZ", int, DEFAULT_IMAGE_SIZE),
                            help="square network input size, a multiple of the model's largest stride (32)")
        parser.add_argument("--conf", type=float, default=default("YOLO11_CONF", float, DEFAULT_CONF),
                            help="score threshold every track applies")
        parser.add_argument("--iou", type=float, default=default("YOLO11_IOU", float, DEFAULT_IOU),
                            help="NMS IoU threshold every track applies")
        parser.add_argument("--max-det", type=int, default=default("YOLO11_MAX_DET", int, DEFAULT_MAX_DET),
                            help="detections returned per image, at most")
        parser.add_argument("--track-a-decode", choices=repo.TRACK_A_DECODES,
                            default=default("YOLO11_TRACK_A_DECODE", str, repo.PYTORCH_DECODE),
                            help="where Track A decodes JPEGs on a GPU instance: gpu (nvJPEG on the SMs), nvimgcodec (the "
                                 "GPU's hardware JPEG decoder; needs nvidia-nvimgcodec in the image) or cpu (OpenCV "
                                 "threads)")
        parser.add_argument("--track-a-network", choices=repo.TRACK_A_NETWORKS,
                            default=default("YOLO11_TRACK_A_NETWORK", str, repo.PYTORCH_NETWORK),
                            help="Track A's network on a GPU: compiled (built at export on the GPU host, about 9 "
                                 "minutes on an H100) or eager")
        parser.add_argument("--preprocess-decode", choices=repo.PREPROCESS_DECODES,
                            default=default("YOLO11_PREPROCESS_DECODE", str, repo.PREPROCESS_DECODE),
                            help="where tracks B and C decode and letterbox on a GPU host: gpu (nvJPEG) or "
                                 "nvimgcodec (KIND_GPU instances), or cpu (OpenCV threads, KIND_CPU instances)")
        tracking = repo.TrackingOptions()
        parser.add_argument("--track-detector", choices=("auto", *repo.PUBLIC_MODELS),
                            default=default("YOLO11_TRACK_DETECTOR", str, tracking.detector),
                            help="the detection track the tracking model (yolo11_track) calls; auto: the fastest "
                                 f"measured on the profile served ({', '.join(f'{k}: {v}' for k, v in repo.FASTEST_DETECTOR.items())})")
        parser.add_argument("--tracker", choices=TRACKERS, default=default("YOLO11_TRACKER", str, tracking.tracker),
                            help="Ultralytics' tracker the tracking model runs, with its YAML defaults")
        parser.add_argument("--track-idle-s", type=float, default=default("YOLO11_TRACK_IDLE_S", float, tracking.idle_s),
                            help="seconds a video stream may send nothing before the tracking model lets it go")
        parser.add_argument("--gpus", type=int, default=default("YOLO11_GPUS", int, 0),
                            help="GPUs of the host that will serve (0: this host's, the GPUs visible here); the "
                                 "queue bounds scale with them, and the GPU profile refuses to serve on another count")

    @classmethod
    def from_args(cls, args) -> "ExportOptions":
        return cls(imgsz=args.imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det,
                   track_a=repo.TrackAOptions(args.track_a_decode, args.track_a_network),
                   preprocess_decode=args.preprocess_decode,
                   tracking=repo.TrackingOptions(args.track_detector, args.tracker, args.track_idle_s),
                   gpus=args.gpus or gpu_count())


@dataclass(frozen=True)
class ExportManifest:
    weights: str
    """What was asked for (a path, a name, a ``.yaml``)."""
    weights_sha256: str
    """Of the weights file (or name) and the options: a change of either re-exports."""
    metadata: str
    """The exported model's ``ModelSpec``, as every public model's config states it."""
    untrained: bool
    fallback_reason: str | None = None
    """Set when the untrained network stands in for weights that could not be resolved."""
    source: str | None = None
    """The file the weights were read from, or the network definition."""
    format_version: int = EXPORT_FORMAT_VERSION
    track_a: dict | None = None
    """Track A's ``TrackAOptions`` the configs were written with (None: the defaults)."""
    preprocess_decode: str = repo.PREPROCESS_DECODE
    """The B/C preprocessing step's mode the configs were written with."""
    tracking: dict | None = None
    """The tracking model's ``TrackingOptions`` the configs were written with (None: the defaults)."""
    gpus: int = 1
    """The serving host's GPUs the queue bounds were scaled for."""

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_metadata(self.metadata)

    @property
    def track_a_options(self) -> repo.TrackAOptions:
        return repo.TrackAOptions(**(self.track_a or {}))

    @property
    def tracking_options(self) -> repo.TrackingOptions:
        return repo.TrackingOptions(**(self.tracking or {}))


def artifact(artifacts: Path, model: str, filename: str) -> Path:
    """Where an exported file of ``model`` lives: its version folder, where Triton and the twins read it."""
    return artifacts / model / "1" / filename


def weights_pt(artifacts: Path) -> Path:
    return artifact(artifacts, repo.PYTORCH, "model.pt")


def raw_onnx(artifacts: Path) -> Path:
    return artifact(artifacts, repo.RAW_TRT, "model.onnx")


def end2end_onnx(artifacts: Path) -> Path:
    return artifact(artifacts, repo.END2END_TRT, "model.onnx")


def ultralytics_raw_onnx(artifacts: Path) -> Path:
    return artifact(artifacts, repo.ULTRALYTICS_RAW_TRT, "model.onnx")


def onnx_for(artifacts: Path, definition: repo.ModelDefinition, fp16: bool = False) -> Path:
    """The exported graph a TensorRT leaf is built from (FP32: what its CPU twin runs; FP16: what FP16 plans are)."""
    if definition.onnx_source is None:
        raise ValueError(f"{definition.name} is not built from ONNX")
    return artifact(artifacts, definition.onnx_source, FP16_ONNX if fp16 else "model.onnx")


def written_folders(artifacts: Path) -> list[Path]:
    """Every folder the export and the engine build write into."""
    folders = {artifacts}
    for definition in repo.model_definitions(repo.default_spec()):  # the same folders for every spec
        folders |= {artifacts / definition.name, artifacts / definition.name / "1"}
        if repo.warmup_files(definition, repo.default_spec()):
            folders.add(artifacts / definition.name / "warmup")
    return sorted(folders)


def check_writable(artifacts: Path) -> None:
    """Fail before any work when a folder the export writes is not writable by this process, with the fix."""
    problems = {}
    for folder in written_folders(artifacts):
        existing = next(p for p in (folder, *folder.parents) if p.exists())  # what mkdir would have to write in
        if not os.access(existing, os.W_OK | os.X_OK):
            owner = existing.stat()
            problems[existing] = f"{existing} (owned by {owner.st_uid}:{owner.st_gid}, mode {owner.st_mode & 0o777:o})"
    if problems:
        ids = f"{os.getuid()}:{os.getgid()}"
        raise RepositoryNotWritable(
            f"the export runs as uid {os.getuid()} gid {os.getgid()} and cannot write: " + "; ".join(problems.values())
            + ". Run it as the owner of the repository (docker compose: YOLO11_UID and YOLO11_GID in .env, "
              "see the README) or make those folders writable. Kubernetes: the pod's fsGroup makes a volume "
              "writable only where its plugin applies it, and NFS and many ReadWriteMany volumes do not (a CSI "
              "driver applies it to them only with fsGroupPolicy: File, and an NFS server squashing root refuses "
              "it); run the Job as the owner above (runAsUser, runAsGroup), or give the volume to "
              f"{ids} once: on the NFS server (chown -R {ids} the exported directory, or export it with "
              f"all_squash,anonuid={os.getuid()},anongid={os.getgid()}), or from an initContainer running as root "
              f"(chown -R {ids} on the mount; needs no_root_squash).")


def _source_key(weights: str, options: ExportOptions) -> str:
    path = Path(weights)
    # A name (yolo11n.yaml, or a .pt Ultralytics would download): the name and our export code define it.
    source = path.read_bytes() if path.is_file() else f"{weights}:{EXPORT_FORMAT_VERSION}".encode()
    return hashlib.sha256(source + json.dumps(asdict(options), sort_keys=True).encode()).hexdigest()


def read_manifest(artifacts: Path) -> ExportManifest | None:
    try:
        return ExportManifest(**json.loads((artifacts / MANIFEST).read_text()))
    except (FileNotFoundError, TypeError, json.JSONDecodeError):
        return None


def _up_to_date(current: ExportManifest | None, key: str, outputs: tuple[Path, ...]) -> bool:
    return bool(current and current.weights_sha256 == key and current.format_version == EXPORT_FORMAT_VERSION
                and current.fallback_reason is None and all(p.exists() for p in outputs))


def _staged(path: Path) -> Path:
    """Where ``path`` is written before it is moved into place: same folder and suffix (Ultralytics reads the
    suffix), a dot first so nothing serves it."""
    return path.with_name(".partial." + path.name)


def export_artifacts(weights: str, artifacts: Path, force: bool = False, weights_dir: Path | None = None,
                     allow_untrained: bool = False, options: ExportOptions = ExportOptions()) -> ExportManifest:
    """Write ``model.pt``, the raw, End2End and Ultralytics-form ONNX (FP32 and FP16) and every model config for ``weights``
    served as ``options`` say; return what was served.

    Unresolvable weights, or a model no track can serve, raise ``weights.WeightsError`` (the
    first unless ``allow_untrained``); an unwritable repository raises ``RepositoryNotWritable``
    before anything is loaded. Either way, and on any failure, the repository is left as it was.
    """
    from python_models.export.weights import model_spec, resolve_weights

    check_writable(artifacts)
    key = _source_key(weights, options)
    graphs = (raw_onnx(artifacts), end2end_onnx(artifacts), ultralytics_raw_onnx(artifacts))
    outputs = (weights_pt(artifacts), *graphs, *(path.with_name(FP16_ONNX) for path in graphs))
    current = read_manifest(artifacts)
    if not force and _up_to_date(current, key, outputs) and not repository_files.write_repository(
            artifacts, current.spec, check=True, track_a=options.track_a, preprocess_decode=options.preprocess_decode,
            tracking=options.tracking, gpus=options.gpus):
        return current

    resolved = resolve_weights(weights, weights_dir=weights_dir, allow_untrained=allow_untrained,
                               imgsz=options.imgsz, conf=options.conf)
    spec = model_spec(resolved.model, options.imgsz, options.conf, options.iou, options.max_det)
    staged: dict[Path, Path] = {}
    try:
        pt = weights_pt(artifacts)
        pt.parent.mkdir(parents=True, exist_ok=True)
        staged[pt] = _staged(pt)
        resolved.model.save(str(staged[pt]))

        from ultralytics import YOLO

        # Export from the saved file so the ONNX and Track A serve byte-identical weights.
        exported = Path(YOLO(str(staged[pt])).export(format="onnx", imgsz=spec.imgsz, dynamic=True, simplify=True,
                                                      verbose=False))
        import onnx

        from python_models.export.end2end import end2end_graph, fp16_graph, uint8_input_graph

        ultralytics_raw = onnx.load(str(exported))
        exported.unlink()
        raw = uint8_input_graph(ultralytics_raw)
        graph = end2end_graph(raw, spec)
        for fp32, target in ((raw, raw_onnx(artifacts)), (graph, end2end_onnx(artifacts)),
                             (ultralytics_raw, ultralytics_raw_onnx(artifacts))):
            for model, path in ((fp32, target), (fp16_graph(fp32, spec.imgsz), target.with_name(FP16_ONNX))):
                onnx.checker.check_model(model)
                path.parent.mkdir(parents=True, exist_ok=True)
                staged[path] = _staged(path)
                onnx.save(model, str(staged[path]))
    except BaseException:
        for partial in [*staged.values(), _staged(weights_pt(artifacts)).with_suffix(".onnx")]:
            partial.unlink(missing_ok=True)
        raise
    manifest_path = artifacts / MANIFEST
    manifest_path.unlink(missing_ok=True)  # no manifest while artifacts and configs disagree
    (artifacts / EXPORT_COMPLETE).unlink(missing_ok=True)  # nor a record a serving pod would start from
    for target, partial in staged.items():
        partial.replace(target)
    repository_files.write_repository(artifacts, spec, track_a=options.track_a, preprocess_decode=options.preprocess_decode,
                                      tracking=options.tracking, gpus=options.gpus)
    manifest = ExportManifest(weights=weights, weights_sha256=key, metadata=spec.metadata(), untrained=resolved.untrained,
                              fallback_reason=resolved.fallback_reason, source=resolved.source,
                              track_a=asdict(options.track_a), preprocess_decode=options.preprocess_decode,
                              tracking=asdict(options.tracking), gpus=options.gpus)
    manifest_path.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def untrained_banner(manifest: ExportManifest) -> str:
    """What the export and the launcher print when the untrained test network is what gets served."""
    why = (f"weights {manifest.weights!r} could not be used ({manifest.fallback_reason})" if manifest.fallback_reason
           else f"{manifest.weights!r} names a network definition, not trained weights")
    rule = "=" * 100
    return (f"{rule}\n!!! SERVING THE UNTRAINED TEST NETWORK: {why}; detections are meaningless. "
            f"Pass --weights path/to/weights.pt for real ones. !!!\n{rule}")
