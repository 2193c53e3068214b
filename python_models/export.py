"""Turn weights into the artifacts every track serves: the ``.pt`` for Track A, ONNX for the engines.

Two ONNX graphs: the raw network (Track B's engine) and the End2End graph built on
it (``python_models.end2end``: NMS and un-letterbox inside), which Track C's and
every Track D tier's engines are built from.

Artifacts land in the model folders of a repository root (``model_repository/`` by
default), where Triton, the CPU twins and the TensorRT builder read them. A
manifest skips re-exporting unchanged weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from python_models import repository as repo

MANIFEST = "export.json"
EXPORT_FORMAT_VERSION = 2
"""Bump when what the export writes changes, so old artifacts are rebuilt."""


@dataclass(frozen=True)
class ExportManifest:
    weights: str
    weights_sha256: str
    untrained: bool
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


def onnx_for(artifacts: Path, definition: repo.ModelDefinition) -> Path:
    """The exported graph a TensorRT leaf is built from (and its CPU twin runs)."""
    if definition.onnx_source is None:
        raise ValueError(f"{definition.name} is not built from ONNX")
    return artifact(artifacts, definition.onnx_source, "model.onnx")


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


def export_artifacts(weights: str, artifacts: Path, force: bool = False) -> ExportManifest:
    """Write ``model.pt``, the raw and the End2End ONNX (dynamic batch) for ``weights``; return what was served."""
    from python_models.detector import resolve_weights

    key = _source_key(weights)
    current = read_manifest(artifacts)
    outputs = (weights_pt(artifacts), raw_onnx(artifacts), end2end_onnx(artifacts))
    if (not force and current and current.weights_sha256 == key and current.format_version == EXPORT_FORMAT_VERSION
            and all(p.exists() for p in outputs)):
        return current

    model, untrained = resolve_weights(weights)
    pt = weights_pt(artifacts)
    pt.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(pt))

    from ultralytics import YOLO

    from python_models.contract import IMAGE_SIZE

    # Export from the saved file so the ONNX and Track A serve byte-identical weights.
    onnx_path = Path(YOLO(str(pt)).export(format="onnx", imgsz=IMAGE_SIZE, dynamic=True, simplify=True, verbose=False))
    target = raw_onnx(artifacts)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(onnx_path), target)

    import onnx

    from python_models.end2end import end2end_graph

    graph = end2end_graph(onnx.load(str(target)))
    onnx.checker.check_model(graph)
    end2end_onnx(artifacts).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(end2end_onnx(artifacts)))

    manifest = ExportManifest(weights=weights, weights_sha256=key, untrained=untrained)
    (artifacts / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest
