"""The step after Track D's guard in ``yolo11-triton check guard-gpu``: reports, per row, where the letterboxed image
arrived (1: GPU memory, 0: host memory) and the sum of its bytes, so a client can tell that the guard handed on the
DALI leaf's answer unchanged and whether it stayed on the GPU."""

from __future__ import annotations

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from python_models.contract import LETTERBOXED_IMAGES
from python_models.runtime.triton.adapter import guarded, tensors_response

ON_GPU = "on_gpu"
CHECKSUM = "checksum"


class TritonPythonModel:
    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, LETTERBOXED_IMAGES)
            images = torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
            sums = images.reshape(len(images), -1).to(torch.int64).sum(1).cpu().numpy()
            placed = np.full((len(images), 1), 0 if tensor.is_cpu() else 1, np.int32)
            responses.append(tensors_response({ON_GPU: placed, CHECKSUM: sums.reshape(-1, 1)}))
        return responses
