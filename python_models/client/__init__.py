"""What a client of the server runs: pack encoded images into the ``images`` tensor, unpack detections, check an
answer against the contract (here); the catalogue of bad inputs (``bad_inputs``); comparing detections
(``matching``); Triton's metrics (``metrics``), perf_analyzer (``perf_analyzer``) and benchmark reports
(``report``); the self-check of a live server (``server_check``).

May import: ``python_models.contract`` and this package, never what runs inside Triton or builds the repository:
a client needs the contract, not the server's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from python_models.contract import (
    INPUT_IMAGES,
    OUTPUT_BOXES,
    OUTPUT_CLASSES,
    OUTPUT_NUM_DETECTIONS,
    OUTPUT_SCORES,
    PUBLIC_MODELS,
    PUBLIC_OUTPUT_NAMES,
    ModelSpec,
)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(source: Path | None = None) -> list[Path]:
    """The JPEG/PNG files a load tool sends: ``source`` (a folder, or one file), else the ultralytics sample images."""
    if source is None:
        from ultralytics.utils import ASSETS

        source = Path(ASSETS)
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if source.is_dir() else [source]
    if not files:
        raise ValueError(f"no .jpg/.jpeg/.png files in {source}")
    return files


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) as the server sees the image (OpenCV applies EXIF orientation, as every track's decoder does);
    for checking that boxes lie inside it."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not an image OpenCV can decode")
    return image.shape[1], image.shape[0]


def pack_images(encoded: Sequence[bytes]) -> np.ndarray:
    """One row per encoded image, zero-padded to the longest: decoders stop at the image's end marker."""
    width = max(len(e) for e in encoded)
    rows = np.zeros((len(encoded), width), dtype=np.uint8)
    for row, data in zip(rows, encoded):
        row[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return rows


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2 in original-image pixels
    scores: np.ndarray  # (n,)
    classes: np.ndarray  # (n,)
    names: tuple[str, ...] = ()
    """The class name of each detection (empty when unpacked without the served model's names)."""

    def __len__(self) -> int:
        return len(self.scores)


def served_spec(client, model: str) -> ModelSpec:
    """The served model's classes, names, image size and thresholds, from its config's ``metadata`` parameter
    (a ``tritonclient`` gRPC or HTTP client)."""
    config = client.get_model_config(model)
    if not isinstance(config, dict):  # gRPC answers a protobuf message
        from google.protobuf import json_format

        config = json_format.MessageToDict(config.config, preserving_proto_field_name=True)
    return ModelSpec.from_config(config)


def unpack_detections(outputs: dict[str, np.ndarray], spec: ModelSpec | None = None) -> list[Detections]:
    """Per image, the first ``num_detections`` rows of each output, with class names when ``spec`` is given."""
    num = outputs[OUTPUT_NUM_DETECTIONS].reshape(-1)
    detections = []
    for i, n in enumerate(num):
        classes = outputs[OUTPUT_CLASSES][i, :n]
        names = tuple(spec.names[k] for k in classes) if spec is not None else ()
        detections.append(Detections(outputs[OUTPUT_BOXES][i, :n], outputs[OUTPUT_SCORES][i, :n], classes, names))
    return detections


def ready_public_models(client) -> list[str]:
    """The public models ``client``'s server has ready, in the contract's order."""
    return [model for model in PUBLIC_MODELS if client.is_model_ready(model)]


def infer_grpc(client, model: str, encoded: Sequence[bytes], timeout: float | None = None,
               outputs: Sequence[str] = PUBLIC_OUTPUT_NAMES, **sequence) -> dict[str, np.ndarray]:
    """The ``outputs`` of ``model`` for the ``encoded`` images in one request; ``sequence``: the ``sequence_id``,
    ``sequence_start`` and ``sequence_end`` of a frame of a stream (``client.streams``)."""
    import tritonclient.grpc as grpcclient

    rows = pack_images(encoded)
    inp = grpcclient.InferInput(INPUT_IMAGES, list(rows.shape), "UINT8")
    inp.set_data_from_numpy(rows)
    requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
    result = client.infer(model, [inp], outputs=requested, client_timeout=timeout, **sequence)
    return {name: result.as_numpy(name) for name in outputs}


def infer_http(client, model: str, encoded: Sequence[bytes], timeout: float | None = None) -> dict[str, np.ndarray]:
    import tritonclient.http as httpclient

    rows = pack_images(encoded)
    inp = httpclient.InferInput(INPUT_IMAGES, list(rows.shape), "UINT8")
    inp.set_data_from_numpy(rows, binary_data=True)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=True) for name in PUBLIC_OUTPUT_NAMES]
    result = client.infer(model, [inp], outputs=outputs, timeout=timeout)
    return {name: result.as_numpy(name) for name in PUBLIC_OUTPUT_NAMES}


def contract_violations(outputs: dict[str, np.ndarray | None], sizes: Sequence[tuple[int, int]],
                        spec: ModelSpec) -> list[str]:
    """What is wrong with a response to images of ``sizes`` (width, height), per the contract and the served model
    ``spec`` (its class count, thresholds and ``max_det``); empty if nothing.

    Load tools count a non-empty answer as a failure: a server that answers fast but
    wrongly must not look healthy.
    """
    problems = []
    rows = len(sizes)
    for tensor in spec.public_outputs():
        value = outputs.get(tensor.name)
        if value is None:
            problems.append(f"{tensor.name} missing")
        elif value.dtype != tensor.dtype or value.shape != (rows, *tensor.dims):
            problems.append(f"{tensor.name}: {value.dtype}{list(value.shape)}, expected {tensor.dtype}{[rows, *tensor.dims]}")
    if problems:
        return problems
    num = outputs[OUTPUT_NUM_DETECTIONS].reshape(-1)
    for row, (width, height) in enumerate(sizes):
        n = int(num[row])
        if not 0 <= n <= spec.max_det:
            problems.append(f"row {row}: num_detections {n} outside 0..{spec.max_det}")
            continue
        boxes, scores, classes = (outputs[k][row] for k in (OUTPUT_BOXES, OUTPUT_SCORES, OUTPUT_CLASSES))
        if not np.isfinite(boxes).all() or not np.isfinite(scores).all():
            problems.append(f"row {row}: non-finite values")
        if boxes[n:].any() or scores[n:].any() or classes[n:].any():
            problems.append(f"row {row}: non-zero rows past num_detections")
        kept = boxes[:n]
        if n and (kept.min() < 0 or kept[:, [0, 2]].max() > width or kept[:, [1, 3]].max() > height
                  or (kept[:, 2:] < kept[:, :2]).any()):
            problems.append(f"row {row}: boxes outside the {width}x{height} image or not x1<=x2, y1<=y2")
        if n and (scores[:n].min() < spec.conf or scores[:n].max() > 1 or np.any(np.diff(scores[:n]) > 0)):
            problems.append(f"row {row}: scores not in [{spec.conf}, 1] best first")
        if n and (classes[:n].min() < 0 or classes[:n].max() >= spec.num_classes):
            problems.append(f"row {row}: class outside 0..{spec.num_classes - 1}")
    return problems
