"""Tracks B and C: CPU decode and letterbox, emitting the image tensor and the transform that undoes it.

Config parameter ``decode_threads``: rows are decoded and letterboxed on that many threads per instance (0:
twice the server's cores shared out over every instance on the host, as Track A does).
"""

from __future__ import annotations

from python_models.contract import LETTERBOXED_IMAGES
from python_models.runtime.triton.adapter import BatchBuffer, guarded, letterboxed_responses, output_dims, thread_pool


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
        return letterboxed_responses(requests, self.buffer, self.pool)

    def finalize(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)
