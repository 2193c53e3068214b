"""Track B: NMS over the TensorRT raw output, boxes mapped back to original-image pixels.

Config parameter ``threads``: PyTorch's intra-op threads per instance for the batch-wide candidate filter (0:
twice the server's cores shared out over every instance on the host, as Track A's decode threads are).
"""

from __future__ import annotations

import numpy as np
import torch

from python_models.contract import LETTERBOX_TRANSFORM, RAW_PREDICTIONS
from python_models.runtime.letterbox import LetterboxTransform
from python_models.runtime.nms import nms, pack_detections
from python_models.runtime.triton.adapter import guarded, input_array, model_spec, respond, threads_per_instance


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        # The filter over [batch, 84, 8400] scores is the step's largest part and parallel inside PyTorch.
        torch.set_num_threads(threads_per_instance(args, "threads"))
        self.spec = model_spec(args)

    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        raws = [input_array(r, RAW_PREDICTIONS) for r in requests]
        params = np.concatenate([input_array(r, LETTERBOX_TRANSFORM) for r in requests])
        detections = nms(np.concatenate(raws), self.spec)
        packed = pack_detections(detections, [LetterboxTransform.from_array(p) for p in params],
                                 self.spec.max_det)
        bounds = np.cumsum([0] + [len(r) for r in raws])
        outcome = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        return respond(outcome, lambda rows: {name: value[rows] for name, value in packed.items()})
