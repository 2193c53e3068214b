"""The end of a benchmark ensemble: takes each request's letterboxed rows and answers no detections, so that the
step before it (the CPU preprocessing of tracks B and C) is what a load tool measures, without gRPC carrying the
letterboxed tensors back (``yolo11-triton bench preprocess``)."""

from __future__ import annotations

import numpy as np

from python_models.contract import (LETTERBOX_TRANSFORM, OUTPUT_BOXES, OUTPUT_CLASSES, OUTPUT_NUM_DETECTIONS,
                                    OUTPUT_SCORES)
import triton_python_backend_utils as pb_utils

from python_models.runtime.triton.adapter import guarded, output_dims, tensors_response


def input_rows(request, name: str) -> int:
    """Rows of an input wherever it lies (host or device: this step takes inputs where they are)."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor.is_cpu():
        return len(tensor.as_numpy())
    from torch.utils import dlpack

    return len(dlpack.from_dlpack(tensor.to_dlpack()))


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.max_det = output_dims(args, OUTPUT_BOXES)[0]

    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        responses = []
        for request in requests:
            rows = input_rows(request, LETTERBOX_TRANSFORM)
            responses.append(tensors_response({
                OUTPUT_NUM_DETECTIONS: np.zeros((rows, 1), np.int32),
                OUTPUT_BOXES: np.zeros((rows, self.max_det, 4), np.float32),
                OUTPUT_SCORES: np.zeros((rows, self.max_det), np.float32),
                OUTPUT_CLASSES: np.zeros((rows, self.max_det), np.int32),
            }))
        return responses
