"""Tracks B and C: decode and letterbox, emitting the image tensor and the transform that undoes it.

Config parameters: ``decode`` ``cpu`` (OpenCV on the host's threads; a KIND_CPU instance) or ``gpu`` / ``nvimgcodec``
(a KIND_GPU instance: JPEGs decoded by nvJPEG or the hardware decoder and letterboxed on its GPU as Track A does,
``runtime/gpu_decode.py``, the images handed to the engine where they are, through DLPack; PNGs and CMYK JPEGs
still decoded on the threads).
``decode_threads``: rows are decoded and letterboxed on that many threads per instance (0: twice the server's
cores shared out over every instance on the host, as Track A does).
"""

from __future__ import annotations

from python_models.contract import LETTERBOX_TRANSFORM, LETTERBOXED_IMAGES
from python_models.runtime.triton.adapter import (BatchBuffer, device_tensors_response, error_response, guarded,
                                                   letterbox_on_gpu, letterboxed_responses, model_config, output_dims,
                                                   parameter, thread_pool, transform_array)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import cv2

        # The letterboxed size is the one this model's output is configured with (height, width, channels).
        size = output_dims(args, LETTERBOXED_IMAGES)[0]
        self.buffer = BatchBuffer(size)
        cv2.setNumThreads(1)  # parallelism comes from the instances and their decode threads
        on_gpu = args["model_instance_kind"] == "GPU"
        self.pool = thread_pool(args, "decode_threads", on_gpu)
        self.decoder = None
        config = model_config(args)
        asked = parameter(config, "decode", "cpu")
        if asked != "cpu":  # torch is imported by the GPU mode only: the CPU step's stubs stay as small as before
            import torch

            from python_models.runtime.gpu_decode import decode_mode, gpu_decoder

            mode = decode_mode(asked, on_gpu)  # refuses an unknown value, and a GPU decoder on a CPU instance
            device = torch.device(f"cuda:{args['model_instance_device_id']}")
            torch.cuda.set_device(device)
            self.decoder = gpu_decoder(mode, device)
            self.canvas = torch.empty((max(1, int(config.get("max_batch_size", 1))), size, size, 3), dtype=torch.uint8,
                                      device=device)

    def execute(self, requests):
        return guarded(requests, self._run_on_gpu if self.decoder else self._run)

    def _run(self, requests):
        return letterboxed_responses(requests, self.buffer, self.pool)

    def _run_on_gpu(self, requests):
        padded, transforms, outcome = letterbox_on_gpu(requests, self.buffer.size, self.decoder, self.canvas, self.pool)
        rgb = padded.flip(-1).contiguous() if padded is not None else None  # the engines take RGB, as on the CPU
        params = transform_array(transforms)
        return [error_response(item) if isinstance(item, Exception)
                else device_tensors_response({LETTERBOXED_IMAGES: rgb[item], LETTERBOX_TRANSFORM: params[item]})
                for item in outcome]

    def finalize(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)
