"""Track A: decode, letterbox, PyTorch forward, NMS and rescale in one Python-backend model."""

from __future__ import annotations

import torch

from python_models.detector import forward, load_network
from python_models.nms import nms, pack_detections
from python_models.triton.adapter import BatchBuffer, guarded, letterbox_requests, respond, version_dir


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        on_gpu = args["model_instance_kind"] == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu")
        self.half = on_gpu  # FP16 on the GPU, as TensorRT engines run; FP32 on the CPU, as the reference does
        self.buffer = BatchBuffer()
        self.net = load_network(version_dir(args) / "model.pt", self.device, self.half)

    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        batch, transforms, outcome = letterbox_requests(requests, self.buffer)
        detections = nms(forward(self.net, batch, self.device, self.half)) if len(batch) else []
        packed = pack_detections(detections, transforms)
        return respond(outcome, lambda rows: {name: value[rows] for name, value in packed.items()})
