"""Track D's first step as it was before it called the DALI leaf itself, kept as the baseline of
``yolo11-triton check guard-gpu``: probes every row (``decode.probe``), answers a request with a bad row
INVALID_ARGUMENT, and passes the other requests' bytes on unchanged to a DALI step after it in the ensemble (which
then fails a whole batch on one damaged scan). Not served."""

from __future__ import annotations

from python_models.contract import INPUT_IMAGES
from python_models.runtime.decode import probe
from python_models.runtime.triton.adapter import guarded, input_array, read_rows, respond_each


class TritonPythonModel:
    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        _, outcome = read_rows(requests, probe)
        return respond_each(requests, outcome, lambda request: {INPUT_IMAGES: input_array(request, INPUT_IMAGES)})
