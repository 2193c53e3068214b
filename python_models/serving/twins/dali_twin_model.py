"""CPU-profile twin of a Track D DALI leaf: the same DALI graph (``python_models.runtime.dali_letterbox``), decoded on the CPU.

It fails as Triton's DALI backend fails: the rows of every request in the batch go
through the pipeline at once, and when DALI cannot decode one of them, **every**
request of the batch gets the same UNKNOWN error (``ExecuteBatched`` in the backend's
``dali_model_instance.cc``), after which the pipeline is rebuilt and serves the next
batch. It checks nothing itself, applies no pixel limit, and never retries: protecting
batch-mates is the job of the CPU guard in front of it in each Track D ensemble
(``dali_guard_model``), and the tests must prove that the guard, not this twin, does it.

``FAIL_LOAD_ENV`` (tests only) names leaves whose twin fails its load, as a DALI leaf does on a GPU host whose
``dali.py`` the backend cannot serialise: what a failed leaf does to the tracks over it is tested with it.
"""

from __future__ import annotations

import os

from python_models.contract import INPUT_IMAGES, LETTERBOX_TRANSFORM, LETTERBOXED_IMAGES
from python_models.runtime.dali_letterbox import letterbox_pipeline
from python_models.serving.twins import FAIL_LOAD_ENV
from python_models.runtime.triton.adapter import guarded, input_array, log_fault, model_config, output_dims, tensors_response
from python_models.runtime.triton.adapter import unknown_error


def _reason(exc: Exception) -> str:
    """The line of DALI's multi-line error that names the problem."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    after = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line == "encountered:"]
    return (after or lines or [type(exc).__name__])[0]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = model_config(args)
        if config["name"] in os.environ.get(FAIL_LOAD_ENV, "").split(","):
            raise RuntimeError(f"{config['name']}: failing to load as asked by {FAIL_LOAD_ENV} (a DALI leaf whose "
                               "dali.py the backend cannot serialise fails the same way)")
        self.max_batch = config["max_batch_size"]
        self.size = output_dims(args, LETTERBOXED_IMAGES)[0]  # as the production dali.py is generated with
        self.pipe = self._build()

    def _build(self):
        pipe = letterbox_pipeline(size=self.size, batch_size=self.max_batch, num_threads=os.cpu_count() or 1, device_id=None,
                                  decoder_device="cpu", prefetch_queue_depth=1)
        pipe.build()
        return pipe

    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        per_request = [input_array(request, INPUT_IMAGES) for request in requests]
        rows = [row for request_rows in per_request for row in request_rows]
        try:
            self.pipe.feed_input(INPUT_IMAGES, rows)
            images, transforms = (output.as_array() for output in self.pipe.run())
        except RuntimeError as exc:
            message = f"DALI pipeline failed for the batch of {len(requests)} request(s): {_reason(exc)}"
            log_fault(message)
            self.pipe = self._build()  # a failed DALI pipeline is not reusable; the backend recovers likewise
            return [unknown_error(message) for _ in requests]
        responses, start = [], 0
        for request_rows in per_request:
            end = start + len(request_rows)
            responses.append(tensors_response({LETTERBOXED_IMAGES: images[start:end], LETTERBOX_TRANSFORM: transforms[start:end]}))
            start = end
        return responses
