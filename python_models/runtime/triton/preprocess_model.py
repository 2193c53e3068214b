"""Tracks B and C: CPU decode and letterbox, emitting the image tensor and the transform that undoes it."""

from __future__ import annotations

import numpy as np

from python_models.contract import LETTERBOX_TRANSFORM, LETTERBOXED_IMAGES, TRANSFORM_SPEC
from python_models.runtime.triton.adapter import BatchBuffer, guarded, letterbox_requests, output_dims, respond


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import cv2

        # The letterboxed size is the one this model's output is configured with.
        self.buffer = BatchBuffer(output_dims(args, LETTERBOXED_IMAGES)[-1])
        cv2.setNumThreads(1)  # parallelism comes from model instances, one core each

    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        batch, transforms, outcome = letterbox_requests(requests, self.buffer)
        params = np.stack([t.to_array() for t in transforms]) if transforms else np.zeros((0, *TRANSFORM_SPEC.dims), np.float32)
        return respond(outcome, lambda rows: {LETTERBOXED_IMAGES: batch[rows], LETTERBOX_TRANSFORM: params[rows]})
