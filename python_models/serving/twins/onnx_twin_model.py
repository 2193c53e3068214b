"""CPU-profile twin of a TensorRT leaf: runs the ONNX graph the engine is built from, with ONNX Runtime.

For the End2End leaves that graph holds ``EfficientNMS_TRT``, which ``python_models.serving.twins.onnx_session``
supplies from ``python_models.serving.twins.efficient_nms``.
"""

from __future__ import annotations

import numpy as np

from python_models.serving.twins.onnx_session import open_session
from python_models.runtime.triton.adapter import guarded, input_array, model_config, tensors_response, version_dir


CHUNK_ROWS = 32
"""The CPU profile runs a larger batch through ONNX Runtime this many rows at a time: the activations of a full batch of
the batch tier (128 images at 640) outgrow a small host's memory and kill the stub, where TensorRT on a GPU takes it
whole. The answers are the same: ONNX Runtime computes each row alone (CI compares a row's answer in any batch with
its answer alone)."""


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = model_config(args)
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        path = version_dir(args) / "model.onnx"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run yolo11-triton export (yolo11-triton serve does) first")
        self.session = open_session(path)

    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        feeds = {name: np.concatenate([input_array(r, name) for r in requests]) for name in self.inputs}
        rows = len(next(iter(feeds.values())))
        chunks = [self.session.run(self.outputs, {name: value[start : start + CHUNK_ROWS] for name, value in feeds.items()})
                  for start in range(0, rows, CHUNK_ROWS)]
        results = {name: np.concatenate([chunk[k] for chunk in chunks]) for k, name in enumerate(self.outputs)}
        responses, start = [], 0
        for request in requests:
            n = len(input_array(request, self.inputs[0]))
            responses.append(tensors_response({k: v[start : start + n] for k, v in results.items()}))
            start += n
        return responses
