"""Turn weights into the artifacts every track serves: the ``.pt`` for Track A, ONNX for the engines.

Two ONNX graphs: the raw network (Track B's engine) and the End2End graph built on
it (``python_models.build.end2end``: NMS and un-letterbox inside), which Track C's and
every Track D tier's engines are built from.

Artifacts land in the model folders of a repository root (``model_repository/`` by
default), where Triton, the CPU twins and the TensorRT builder read them. Beside each
FP32 graph lies its FP16 form (``model_fp16.onnx``, ``end2end.fp16_graph``), which FP16
engines are built from. A manifest skips re-exporting unchanged weights, but never
treats an untrained stand-in as the weights that were asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from python_models.build import repository as repo

MANIFEST = "export.json"
EXPORT_FORMAT_VERSION = 3
"""Bump when what the export writes changes, so old artifacts are rebuilt."""


FP16_ONNX = "model_fp16.onnx"


class RepositoryNotWritable(RuntimeError):
    """The export cannot write where it must; raised before any work is done."""


@dataclass(frozen=True)
class ExportManifest:
    weights: str
    """What was asked for (a path, a name, a ``.yaml``)."""
    weights_sha256: str
    untrained: bool
    fallback_reason: str | None = None
    """Set when the untrained network stands in for weights that could not be resolved."""
    source: str | None = None
    """The file the weights were read from, or the network definition."""
    format_version: int = EXPORT_FORMAT_VERSION


def artifact(artifacts: Path, model: str, filename: str) -> Path:
    """Where an exported file of ``model`` lives: its version folder, where Triton and the twins read it."""
    return artifacts / model / "1" / filename


def weights_pt(artifacts: Path) -> Path:
    return artifact(artifacts, repo.PYTORCH, "model.pt")


def raw_onnx(artifacts: Path) -> Path:
    return artifact(artifacts, repo.RAW_TRT, "model.onnx")


def end2end_onnx(artifacts: Path) -> Path:
    return artifact(artifacts, repo.END2END_TRT, "model.onnx")


def onnx_for(artifacts: Path, definition: repo.ModelDefinition, fp16: bool = False) -> Path:
    """The exported graph a TensorRT leaf is built from (FP32: what its CPU twin runs; FP16: what FP16 plans are)."""
    if definition.onnx_source is None:
        raise ValueError(f"{definition.name} is not built from ONNX")
    return artifact(artifacts, definition.onnx_source, FP16_ONNX if fp16 else "model.onnx")


def written_folders(artifacts: Path) -> list[Path]:
    """Every folder the export and the engine build write into."""
    folders = {artifacts, weights_pt(artifacts).parent, raw_onnx(artifacts).parent, end2end_onnx(artifacts).parent}
    folders |= {artifact(artifacts, d.name, "x").parent for d in repo.model_definitions() if d.onnx_source}
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
        raise RepositoryNotWritable(
            f"the export runs as uid {os.getuid()} gid {os.getgid()} and cannot write: " + "; ".join(problems.values())
            + ". Run it as the owner of the repository (docker compose: YOLO11_UID and YOLO11_GID in .env, "
              "see the README) or make those folders writable.")


def _source_key(weights: str) -> str:
    path = Path(weights)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    # A name (yolo11n.yaml, or a .pt Ultralytics would download): the name and our export code define it.
    return hashlib.sha256(f"{weights}:{EXPORT_FORMAT_VERSION}".encode()).hexdigest()


def read_manifest(artifacts: Path) -> ExportManifest | None:
    try:
        return ExportManifest(**json.loads((artifacts / MANIFEST).read_text()))
    except (FileNotFoundError, TypeError, json.JSONDecodeError):
        return None


def _up_to_date(current: ExportManifest | None, key: str, outputs: tuple[Path, ...]) -> bool:
    return bool(current and current.weights_sha256 == key and current.format_version == EXPORT_FORMAT_VERSION
                and current.fallback_reason is None and all(p.exists() for p in outputs))


def export_artifacts(weights: str, artifacts: Path, force: bool = False, weights_dir: Path | None = None,
                     allow_untrained: bool = False) -> ExportManifest:
    """Write ``model.pt``, the raw and the End2End ONNX (FP32 and FP16) for ``weights``; return what was served.

    Unresolvable weights raise ``weights.WeightsError`` unless ``allow_untrained``; an
    unwritable repository raises ``RepositoryNotWritable`` before anything is loaded.
    """
    from python_models.build.weights import resolve_weights

    check_writable(artifacts)
    key = _source_key(weights)
    outputs = (weights_pt(artifacts), raw_onnx(artifacts), end2end_onnx(artifacts),
               raw_onnx(artifacts).with_name(FP16_ONNX), end2end_onnx(artifacts).with_name(FP16_ONNX))
    current = read_manifest(artifacts)
    if not force and _up_to_date(current, key, outputs):
        return current

    resolved = resolve_weights(weights, weights_dir=weights_dir, allow_untrained=allow_untrained)
    pt = weights_pt(artifacts)
    pt.parent.mkdir(parents=True, exist_ok=True)
    resolved.model.save(str(pt))

    from ultralytics import YOLO

    from python_models.contract import IMAGE_SIZE

    # Export from the saved file so the ONNX and Track A serve byte-identical weights.
    onnx_path = Path(YOLO(str(pt)).export(format="onnx", imgsz=IMAGE_SIZE, dynamic=True, simplify=True, verbose=False))
    target = raw_onnx(artifacts)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(onnx_path), target)

    import onnx

    from python_models.build.end2end import end2end_graph, fp16_graph

    raw = onnx.load(str(target))
    graph = end2end_graph(raw)
    end2end_onnx(artifacts).parent.mkdir(parents=True, exist_ok=True)
    for model, path in ((graph, end2end_onnx(artifacts)), (fp16_graph(raw), target.with_name(FP16_ONNX)),
                        (fp16_graph(graph), end2end_onnx(artifacts).with_name(FP16_ONNX))):
        onnx.checker.check_model(model)
        onnx.save(model, str(path))

    manifest = ExportManifest(weights=weights, weights_sha256=key, untrained=resolved.untrained,
                              fallback_reason=resolved.fallback_reason, source=resolved.source)
    (artifacts / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def untrained_banner(manifest: ExportManifest) -> str:
    """What the export and the launcher print when the untrained test network is what gets served."""
    why = (f"weights {manifest.weights!r} could not be used ({manifest.fallback_reason})" if manifest.fallback_reason
           else f"{manifest.weights!r} names a network definition, not trained weights")
    rule = "=" * 100
    return (f"{rule}\n!!! SERVING THE UNTRAINED TEST NETWORK: {why}; detections are meaningless. "
            f"Pass --weights path/to/weights.pt for real ones. !!!\n{rule}")
