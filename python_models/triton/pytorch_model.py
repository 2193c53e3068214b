"""Track A: decode, letterbox, PyTorch forward, NMS and rescale in one Python-backend model.

Config parameters: ``precision`` ``fp16`` or ``fp32`` (on a GPU; the CPU always runs
FP32, as the reference predictor does) and ``decode_threads`` (0: one per core, at
most 16). Rows are decoded and letterboxed in parallel threads (OpenCV releases the
GIL), stay uint8 until the device, and NMS runs where the head output is.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from python_models.decode import decode
from python_models.detector import forward_padded, load_network
from python_models.letterbox import letterbox_padded
from python_models.nms import nms, pack_detections
from python_models.triton.adapter import guarded, model_config, read_rows, respond, version_dir

PRECISIONS = ("fp16", "fp32")


def _parameter(config: dict, name: str, default: str) -> str:
    return config.get("parameters", {}).get(name, {}).get("string_value", default)


def _decode_and_pad(row: np.ndarray):
    return letterbox_padded(decode(row))


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import torch

        config = model_config(args)
        on_gpu = args["model_instance_kind"] == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu")
        precision = _parameter(config, "precision", "fp16")
        if precision not in PRECISIONS:
            raise ValueError(f"parameter precision must be one of {PRECISIONS}, not {precision!r}")
        self.half = on_gpu and precision == "fp16"
        threads = int(_parameter(config, "decode_threads", "0")) or min(16, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="decode") if threads > 1 else None
        cv2.setNumThreads(1)  # parallelism comes from the decode threads, not from inside each resize
        self.torch = torch
        self.net = load_network(version_dir(args) / "model.pt", self.device, self.half)

    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        items, outcome = read_rows(requests, _decode_and_pad, self.pool)
        detections = []
        if items:
            padded = np.stack([image for image, _ in items])
            detections = nms(forward_padded(self.net, padded, self.device, self.half))
        packed = pack_detections(detections, [transform for _, transform in items])
        return respond(outcome, lambda rows: {name: value[rows] for name, value in packed.items()})

    def finalize(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)
