"""Client side of the contract: pack encoded images into the ``images`` tensor, unpack detections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from python_models.contract import INPUT_IMAGES, OUTPUT_BOXES, OUTPUT_CLASSES, OUTPUT_NUM_DETECTIONS, OUTPUT_SCORES, PUBLIC_OUTPUTS


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
