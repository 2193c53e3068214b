"""The tracking model (``contract.TRACK``): a video stream is a Triton sequence (its correlation ID), and each of its
frames is a request of one image. The frame goes to the detection track named by the parameter ``detector`` through
BLS, unchanged; its detections go to the stream's tracker (``runtime.tracking``); the answer is the detector's
outputs plus a track ID per detection row.

The sequence batcher (strategy ``oldest``) keeps a stream on one instance and sends its frames one at a time, in
order; one execution holds at most one frame of each stream. The frames of one execution are detected concurrently
(the detector batches them), then tracked in order. A frame the detector refuses is answered with its error and
leaves the stream's tracker as it was. When a stub dies, its streams' trackers die with it: their next frame is
refused by Triton (the reloaded instance holds no sequence), and the client starts the sequence again.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from python_models.contract import INPUT_IMAGES, OUTPUT_BOXES, OUTPUT_CLASSES, OUTPUT_NUM_DETECTIONS, OUTPUT_SCORES
from python_models.contract import OUTPUT_TRACK_IDS, PUBLIC_OUTPUT_NAMES
from python_models.runtime.decode import InvalidImageError, probe
from python_models.runtime.tracking import NO_TRACK, Detections, Streams, tracker_settings
from python_models.runtime.triton.adapter import guarded, invalid_argument, model_config, output_dims, parameter
from python_models.runtime.triton.adapter import tensors_response

DETECTOR_CALLS = 16
"""Frames of one execution sent to the detector at once (each a BLS request, batched there by Triton)."""


def host_array(tensor) -> np.ndarray:
    """A BLS output tensor as a host array, wherever the detector left it."""
    if tensor.is_cpu():
        return tensor.as_numpy()
    from torch.utils import dlpack

    return dlpack.from_dlpack(tensor.to_dlpack()).cpu().numpy()


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = model_config(args)
        self.name = config["name"]
        self.detector = parameter(config, "detector", "")
        if not self.detector:
            raise ValueError(f"{self.name}: parameter detector (the detection track this model calls) is not set")
        idle_us = int(config.get("sequence_batching", {}).get("max_sequence_idle_microseconds", 0) or 0)
        if not idle_us:
            raise ValueError(f"{self.name}: sequence_batching.max_sequence_idle_microseconds is not set: without it "
                             "this model cannot know when Triton has let an idle stream go")
        self.streams = Streams(tracker_settings(parameter(config, "tracker", "bytetrack")), idle_us / 1e6)
        self.max_det = output_dims(args, OUTPUT_BOXES)[0]
        self.callers = ThreadPoolExecutor(DETECTOR_CALLS, thread_name_prefix="detect")

    def execute(self, requests):
        return guarded(requests, self._run)

    def _detect(self, request):
        """The detector's outputs for a request's frame (host arrays by name), or the response refusing it."""
        images = pb_utils.get_input_tensor_by_name(request, INPUT_IMAGES)
        rows = images.as_numpy()
        if len(rows) != 1:
            return invalid_argument(f"a frame of a stream is one image per request, not {len(rows)}")
        try:
            probe(rows[0])
        except InvalidImageError as exc:
            return invalid_argument(str(exc))
        answer = pb_utils.InferenceRequest(model_name=self.detector, requested_output_names=list(PUBLIC_OUTPUT_NAMES),
                                           inputs=[images]).exec()
        if answer.has_error():
            return pb_utils.InferenceResponse(error=answer.error())
        return {tensor.name(): host_array(tensor) for tensor in answer.output_tensors()}

    def _run(self, requests):
        now = time.monotonic()
        self.streams.free_idle(now)
        responses = []
        for request, detected in zip(requests, self.callers.map(self._detect, requests)):
            stream, flags = request.correlation_id(), request.flags()
            start = bool(flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START)
            end = bool(flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END)
            if not isinstance(detected, dict):
                self.streams.touch(stream, now, start, end)
                responses.append(detected)
                continue
            count = int(detected[OUTPUT_NUM_DETECTIONS][0, 0])
            ids = np.full((1, self.max_det), NO_TRACK, np.int32)
            frame = Detections(detected[OUTPUT_BOXES][0, :count], detected[OUTPUT_SCORES][0, :count],
                               detected[OUTPUT_CLASSES][0, :count])
            ids[0, :count] = self.streams.frame(stream, frame, now, start, end)
            responses.append(tensors_response({**detected, OUTPUT_TRACK_IDS: ids}))
        return responses

    def finalize(self) -> None:
        self.callers.shutdown(wait=False)
