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
    CONF_THRESHOLD,
    INPUT_IMAGES,
    MAX_DETECTIONS,
    NUM_CLASSES,
    OUTPUT_BOXES,
    OUTPUT_CLASSES,
    OUTPUT_NUM_DETECTIONS,
    OUTPUT_SCORES,
    PUBLIC_MODELS,
    PUBLIC_OUTPUTS,
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

    def __len__(self) -> int:
        return len(self.scores)


def unpack_detections(outputs: dict[str, np.ndarray]) -> list[Detections]:
    """Per image, the first ``num_detections`` rows of each output."""
    num = outputs[OUTPUT_NUM_DETECTIONS].reshape(-1)
    return [
        Detections(outputs[OUTPUT_BOXES][i, :n], outputs[OUTPUT_SCORES][i, :n], outputs[OUTPUT_CLASSES][i, :n])
        for i, n in enumerate(num)
    ]


def ready_public_models(client) -> list[str]:
    """The public models ``client``'s server has ready, in the contract's order."""
    return [model for model in PUBLIC_MODELS if client.is_model_ready(model)]


def infer_grpc(client, model: str, encoded: Sequence[bytes], timeout: float | None = None) -> dict[str, np.ndarray]:
    import tritonclient.grpc as grpcclient

    rows = pack_images(encoded)
    inp = grpcclient.InferInput(INPUT_IMAGES, list(rows.shape), "UINT8")
    inp.set_data_from_numpy(rows)
    outputs = [grpcclient.InferRequestedOutput(s.name) for s in PUBLIC_OUTPUTS]
    result = client.infer(model, [inp], outputs=outputs, client_timeout=timeout)
    return {s.name: result.as_numpy(s.name) for s in PUBLIC_OUTPUTS}


def infer_http(client, model: str, encoded: Sequence[bytes], timeout: float | None = None) -> dict[str, np.ndarray]:
    import tritonclient.http as httpclient

    rows = pack_images(encoded)
    inp = httpclient.InferInput(INPUT_IMAGES, list(rows.shape), "UINT8")
    inp.set_data_from_numpy(rows, binary_data=True)
    outputs = [httpclient.InferRequestedOutput(s.name, binary_data=True) for s in PUBLIC_OUTPUTS]
    result = client.infer(model, [inp], outputs=outputs, timeout=timeout)
    return {s.name: result.as_numpy(s.name) for s in PUBLIC_OUTPUTS}


def contract_violations(outputs: dict[str, np.ndarray | None], sizes: Sequence[tuple[int, int]]) -> list[str]:
    """What is wrong with a response to images of ``sizes`` (width, height), per the contract; empty if nothing.

    Load tools count a non-empty answer as a failure: a server that answers fast but
    wrongly must not look healthy.
    """
    problems = []
    rows = len(sizes)
    for spec in PUBLIC_OUTPUTS:
        value = outputs.get(spec.name)
        if value is None:
            problems.append(f"{spec.name} missing")
        elif value.dtype != spec.dtype or value.shape != (rows, *spec.dims):
            problems.append(f"{spec.name}: {value.dtype}{list(value.shape)}, expected {spec.dtype}{[rows, *spec.dims]}")
    if problems:
        return problems
    num = outputs[OUTPUT_NUM_DETECTIONS].reshape(-1)
    for row, (width, height) in enumerate(sizes):
        n = int(num[row])
        if not 0 <= n <= MAX_DETECTIONS:
            problems.append(f"row {row}: num_detections {n} outside 0..{MAX_DETECTIONS}")
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
        if n and (scores[:n].min() < CONF_THRESHOLD or scores[:n].max() > 1 or np.any(np.diff(scores[:n]) > 0)):
            problems.append(f"row {row}: scores not in [{CONF_THRESHOLD}, 1] best first")
        if n and (classes[:n].min() < 0 or classes[:n].max() >= NUM_CLASSES):
            problems.append(f"row {row}: class outside 0..{NUM_CLASSES - 1}")
    return problems
