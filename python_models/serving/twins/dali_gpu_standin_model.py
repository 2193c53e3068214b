"""A stand-in for a Track D DALI leaf where no DALI backend is (``yolo11-triton check guard-gpu``): the same I/O, the
letterboxed batch left on the GPU as the DALI backend leaves it, and the same failure (one row it cannot decode,
every request of the batch gets UNKNOWN). It decodes with OpenCV and letterboxes as tracks B and C do; only where its
output lives, and how it fails, stand in for DALI.
"""

from __future__ import annotations

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from python_models.contract import INPUT_IMAGES, LETTERBOX_TRANSFORM, LETTERBOXED_IMAGES
from python_models.runtime.decode import InvalidImageError, decode
from python_models.runtime.letterbox import letterbox_rgb
from python_models.runtime.triton.adapter import guarded, input_array, model_config, output_dims, unknown_error


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.size = output_dims(args, LETTERBOXED_IMAGES)[0]
        kind = args.get("model_instance_kind", "CPU")
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if kind == "GPU" else "cpu")
        self.name = model_config(args)["name"]

    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        per_request = [input_array(request, INPUT_IMAGES) for request in requests]
        try:
            letterboxed = [[letterbox_rgb(decode(row), self.size) for row in rows] for rows in per_request]
        except InvalidImageError as exc:  # as the DALI backend: the whole batch fails
            return [unknown_error(f"{self.name}: failed the batch of {len(requests)} request(s): {exc}")
                    for _ in requests]
        responses = []
        for rows in letterboxed:
            images = torch.from_numpy(np.stack([image for image, _ in rows])).to(self.device)
            transforms = np.stack([t.to_array() for _, t in rows])
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor.from_dlpack(LETTERBOXED_IMAGES, torch.utils.dlpack.to_dlpack(images)),
                pb_utils.Tensor(LETTERBOX_TRANSFORM, transforms)]))
        return responses
