"""Track D's first step: refuse bad rows on the CPU before the DALI leaf decodes a batch.

Triton's DALI backend has no per-request error path: one undecodable image fails every
request of its batch with UNKNOWN, and it applies no size limit, so a batch of huge
images can exhaust GPU memory. This step runs ``preprocess.probe`` on every row (format,
header, truncation, PNG chunk CRCs, the pixel limit: no decoding) and answers a
request with a bad row INVALID_ARGUMENT, naming the row, as every other track does;
good requests pass their bytes on unchanged. What it cannot see without decoding
(a JPEG whose entropy-coded data is damaged but whose markers are intact) still
reaches the decoder.
"""

from __future__ import annotations

from python_models.contract import CHECKED_IMAGES, INPUT_IMAGES
from python_models.runtime.preprocess import probe
from python_models.runtime.triton.adapter import guarded, input_array, read_rows, respond_each


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        pass

    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        _, outcome = read_rows(requests, probe)
        return respond_each(requests, outcome, lambda request: {CHECKED_IMAGES: input_array(request, INPUT_IMAGES)})
