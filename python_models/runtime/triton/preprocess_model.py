"""Tracks B and C: CPU decode and letterbox, emitting the image tensor and the transform that undoes it.

Config parameter ``decode_threads``: rows are decoded and letterboxed on that many threads per instance (0:
twice the server's cores shared out over every instance on the host, as Track A does).
"""

from __future__ import annotations

import numpy as np

from python_models.contract import LETTERBOX_TRANSFORM, LETTERBOXED_IMAGES, TRANSFORM_SPEC
from python_models.runtime.triton.adapter import (BatchBuffer, guarded, letterbox_requests, output_dims, respond,
                                                   thread_pool)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import cv2

        # The letterboxed size is the one this model's output is configured with (height, width, channels).
        self.buffer = BatchBuffer(output_dims(args, LETTERBOXED_IMAGES)[0])
        cv2.setNumThreads(1)  # parallelism comes from the instances and their decode threads
        self.pool = thread_pool(args, "decode_threads")

    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        batch, transforms, outcome = letterbox_requests(requests, self.buffer, self.pool)
        params = np.stack([t.to_array() for t in transforms]) if transforms else np.zeros((0, *TRANSFORM_SPEC.dims), np.float32)
        return respond(outcome, lambda rows: {LETTERBOXED_IMAGES: batch[rows], LETTERBOX_TRANSFORM: params[rows]})

    def finalize(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)
