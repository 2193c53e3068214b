"""Track A: decode, letterbox, PyTorch forward, NMS and rescale in one Python-backend model.

Config parameters: ``precision`` ``fp16`` or ``fp32`` (on a GPU; the CPU always runs
FP32, as the reference predictor does), ``decode`` ``gpu`` (JPEGs decoded by nvJPEG and
letterboxed on the device, ``python_models.runtime.gpu_decode``; a GPU instance only) or
``cpu``, ``decode_threads`` (0: twice the cores shared out over the host's instances, at
most 16; ``threads.decode_threads``), ``network`` ``compiled`` (compiled from the inductor caches
the export built on the GPU host, ``network.load_compiled``; a GPU instance only) or ``eager``,
``cuda_graphs`` (``true``: on a GPU the forward, either one, replays CUDA graphs captured
at load time, see ``network.GraphedForward``), and ``nms`` ``device`` (on a GPU: suppression, mapping
to original pixels and packing on the device, one copy of the answers back: ``nms.nms_on_device``) or
``host`` (candidates filtered on the device, suppressed and packed on the host, as the NMS step of
track B does; a CPU instance always does this). Rows decoded on the CPU are decoded and letterboxed in
parallel threads (OpenCV releases the GIL) and stay uint8 until the device.
"""

from __future__ import annotations

import os
import time

import cv2
import numpy as np

from python_models.contract import TRACK_A_NETWORKS, TRACK_A_NMS, TRACK_A_UNSTATED
from python_models.runtime.gpu_decode import decode_mode, gpu_decoder
from python_models.runtime.network import GraphedForward, forward_padded, load_compiled, load_network, warm_up
from python_models.runtime.nms import nms, nms_on_device, pack_detections
from python_models.runtime.decode import decode
from python_models.runtime.letterbox import letterbox_padded
from python_models.runtime.triton.adapter import (guarded, letterbox_on_gpu, model_config, model_spec, parameter,
                                                   read_rows, respond, thread_pool, transform_array, version_dir)

PRECISIONS = ("fp16", "fp32")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import torch

        config = model_config(args)
        self.spec = model_spec(args)
        on_gpu = args["model_instance_kind"] == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu")
        if on_gpu:
            # CUDA graph pools, capture streams and pinned staging follow the current device, which is cuda:0
            # unless set: an instance Triton placed on another GPU would capture its graphs on the wrong one.
            torch.cuda.set_device(self.device)
        precision = parameter(config, "precision", TRACK_A_UNSTATED["precision"])
        if precision not in PRECISIONS:
            raise ValueError(f"parameter precision must be one of {PRECISIONS}, not {precision!r}")
        self.half = on_gpu and precision == "fp16"
        self.decoder = gpu_decoder(decode_mode(parameter(config, "decode", TRACK_A_UNSTATED["decode"]), on_gpu), self.device)
        self.pool = thread_pool(args, "decode_threads", on_gpu)
        where = parameter(config, "nms", TRACK_A_UNSTATED["nms"])
        if where not in TRACK_A_NMS:
            raise ValueError(f"parameter nms must be one of {TRACK_A_NMS}, not {where!r}")
        self.device_nms = on_gpu and where == "device"
        cv2.setNumThreads(1)  # parallelism comes from the decode threads, not from inside each resize
        self.torch = torch
        self.name = args["model_instance_name"]
        self.timing: dict | None = {} if os.environ.get("YOLO11_TRITON_TIMING") == "1" else None
        self.net = load_network(version_dir(args) / "model.pt", self.device, self.half)
        max_batch = max(1, int(config.get("max_batch_size", 1)))
        graphs = parameter(config, "cuda_graphs", "true")
        if graphs not in ("true", "false"):
            raise ValueError(f"parameter cuda_graphs must be true or false, not {graphs!r}")
        network = parameter(config, "network", "eager")
        if network not in TRACK_A_NETWORKS:
            raise ValueError(f"parameter network must be one of {TRACK_A_NETWORKS}, not {network!r}")
        if network == "compiled":
            if not on_gpu:
                raise ValueError("parameter network is compiled but this instance runs on the CPU (KIND_CPU): the "
                                 "caches are compiled for a GPU; set network to eager")
            # From caches nothing is compiled; a pool of compile workers forked from the stub would only cost memory.
            os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
        started = time.perf_counter()
        self.compiled = (load_compiled(version_dir(args), self.net, self.device, self.half, max_batch, self.spec.imgsz)
                         if network == "compiled" else None)
        self.graphed = (GraphedForward(self.net, self.device, self.half, max_batch, self.spec.imgsz, self.compiled)
                        if on_gpu and graphs == "true" else None)
        if self.graphed is None and self.compiled is None:
            warm_up(self.net, self.device, self.half, max_batch, self.spec.imgsz)
        graphs_used = f", CUDA graphs {self.graphed.describe()}" if self.graphed else ""
        print(f"{self.name}: network {network}{graphs_used}, decode {'gpu' if self.decoder else 'cpu'}, nms "
              f"{'device' if self.device_nms else 'host'}, ready in {time.perf_counter() - started:.1f} s", flush=True)
        # Rows are stacked into page-locked memory so the copy to the GPU is asynchronous and twice as fast;
        # one buffer per instance is safe because an instance runs one execute at a time.
        self.staging = (torch.empty((max_batch, self.spec.imgsz, self.spec.imgsz, 3), dtype=torch.uint8).pin_memory()
                        if on_gpu and self.decoder is None else None)
        # With nvJPEG, images are letterboxed straight into this device batch.
        self.canvas = (torch.empty((max_batch, self.spec.imgsz, self.spec.imgsz, 3), dtype=torch.uint8, device=self.device)
                       if self.decoder is not None else None)

    def _decode_and_pad(self, row: np.ndarray):
        return letterbox_padded(decode(row), self.spec.imgsz)

    def execute(self, requests):
        return guarded(requests, self._run)

    def _letterbox_on_cpu(self, requests):
        """Rows decoded and letterboxed on the CPU threads, stacked for the device; transforms; per-request outcome."""
        items, outcome = read_rows(requests, self._decode_and_pad, self.pool)
        if not items:
            return None, [], outcome
        if self.staging is not None:
            padded = self.staging[: len(items)]
            np.stack([image for image, _ in items], out=padded.numpy())
        else:
            padded = np.stack([image for image, _ in items])
        return padded, [transform for _, transform in items], outcome

    def _letterbox_on_gpu(self, requests):
        """JPEG rows through nvJPEG into the device batch, the others on the CPU threads (``gpu_decode``)."""
        return letterbox_on_gpu(requests, self.spec.imgsz, self.decoder, self.canvas, self.pool)

    def _run(self, requests):
        start = time.perf_counter()
        padded, transforms, outcome = (self._letterbox_on_gpu if self.decoder else self._letterbox_on_cpu)(requests)
        if self.timing is not None and self.decoder is not None:
            self.torch.cuda.synchronize(self.device)  # nvJPEG and the letterbox run asynchronously
        decoded = time.perf_counter()
        detections, packed = [], None
        if padded is not None:
            if self.graphed:
                raw = self.graphed(padded)
            elif self.compiled:
                raw = self.compiled(self.torch.as_tensor(padded).to(self.device, non_blocking=True))
            else:
                raw = forward_padded(self.net, padded, self.device, self.half)
            if self.timing is not None and self.device.type == "cuda":
                self.torch.cuda.synchronize(self.device)  # so the forward's time is not billed to NMS
            forwarded = time.perf_counter()
            packed = self._device_nms(raw, transforms) if self.device_nms else None
            if packed is None:
                detections = nms(raw, self.spec)
        else:
            forwarded = decoded
        if packed is None:
            packed = pack_detections(detections, transforms, self.spec.max_det)
        if self.timing is not None:
            self._account(len(transforms), decoded - start, forwarded - decoded, time.perf_counter() - forwarded)
        return respond(outcome, lambda rows: {name: value[rows] for name, value in packed.items()})

    def _device_nms(self, raw, transforms):
        """The answers packed on the device (None when an image has too many candidates: the host path)."""
        params = self.torch.from_numpy(transform_array(transforms)).to(raw.device, non_blocking=True)
        return nms_on_device(raw, self.spec, params)

    def _account(self, images: int, decode_s: float, forward_s: float, nms_s: float) -> None:
        """With YOLO11_TRITON_TIMING=1: every 200 executions, print where the time inside execute went in them."""
        totals = self.timing
        for key, value in (("images", images), ("decode", decode_s), ("forward", forward_s), ("nms", nms_s), ("runs", 1)):
            totals[key] = totals.get(key, 0) + value
        if totals["runs"] == 200:
            n = max(totals["images"], 1)
            print(f"timing {self.name}: last 200 executions, {totals['images'] / totals['runs']:.1f} images each; "
                  f"per image: decode+letterbox {totals['decode'] / n * 1e3:.2f} ms, forward {totals['forward'] / n * 1e3:.2f} ms, "
                  f"nms+pack {totals['nms'] / n * 1e3:.2f} ms", flush=True)
            totals.clear()

    def finalize(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)
