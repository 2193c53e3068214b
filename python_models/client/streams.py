"""A video stream as the tracking model (``contract.TRACK``) takes it: one Triton sequence per stream (its sequence
ID), the first frame flagged START and the last END, one frame per request, each sent after the previous one's
answer so that they arrive in order."""

from __future__ import annotations

import numpy as np

from python_models.contract import INPUT_IMAGES, OUTPUT_NUM_DETECTIONS, OUTPUT_TRACK_IDS, PUBLIC_OUTPUT_NAMES, TRACK

TRACK_OUTPUT_NAMES = (*PUBLIC_OUTPUT_NAMES, OUTPUT_TRACK_IDS)


def send_frame(client, stream_id: int | str, encoded: bytes, start: bool = False, end: bool = False,
               model: str = TRACK, timeout: float | None = None) -> dict[str, np.ndarray]:
    """One frame of stream ``stream_id`` (a non-zero integer or a non-empty string) through a ``tritonclient`` gRPC
    client: the tracking model's outputs by name (one row). Raises what the client raises for a refused frame."""
    import tritonclient.grpc as grpcclient

    row = np.frombuffer(encoded, np.uint8)[None]
    tensor = grpcclient.InferInput(INPUT_IMAGES, list(row.shape), "UINT8")
    tensor.set_data_from_numpy(row)
    outputs = [grpcclient.InferRequestedOutput(name) for name in TRACK_OUTPUT_NAMES]
    result = client.infer(model, [tensor], outputs=outputs, sequence_id=stream_id, sequence_start=start,
                          sequence_end=end, client_timeout=timeout)
    return {name: result.as_numpy(name) for name in TRACK_OUTPUT_NAMES}


def frame_track_ids(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The track ID of each detection of a one-frame answer (the first ``num_detections``; -1 for none yet)."""
    count = int(outputs[OUTPUT_NUM_DETECTIONS].reshape(-1)[0])
    return outputs[OUTPUT_TRACK_IDS][0, :count]
