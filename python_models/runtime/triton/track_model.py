"""The tracking model (``contract.TRACK``): a video stream is a Triton sequence (its correlation ID), and each of its
frames is a request of one image. The frame goes to the detection track named by the parameter ``detector`` through
BLS, unchanged; its detections go to the stream's tracker (``runtime.tracking``); the answer is the detector's
outputs plus a track ID per detection row.

The sequence batcher (strategy ``oldest``) keeps a stream on one instance and sends its frames one at a time, in
order; one execution holds at most one frame of each stream. The frames of one execution are detected concurrently
(the detector batches them), then tracked in order. A frame the detector refuses is answered with its error and
leaves the stream's tracker as it was. When a stub dies, its streams' trackers die with it: their next frame is
refused by Triton (the reloaded model holds no sequence: "must specify the START flag"), and the client starts the
sequence again (``client.streams`` does).

Triton frees an idle stream's slot without telling the model, so a thread here frees its tracker a little later
(``IDLE_MARGIN_S``). Triton stamps a frame's arrival and this model its execution, so a frame that arrived just
before Triton's deadline can run after this model's (over a second of queueing): it is refused with Triton's own
words for a sequence it does not hold ("must specify the START flag"), so the client starts the stream again and
says so (``client.streams``), instead of the stream's identities starting again from 1 unnoticed. Two gauges
(``contract.TRACK_STREAMS_METRIC``, ``TRACK_OBJECTS_METRIC``) say what an instance holds.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from python_models.contract import INPUT_IMAGES, OUTPUT_BOXES, OUTPUT_CLASSES, OUTPUT_NUM_DETECTIONS, OUTPUT_SCORES
from python_models.contract import OUTPUT_TRACK_IDS, PUBLIC_OUTPUT_NAMES, TRACK_OBJECTS_METRIC, TRACK_STREAMS_METRIC
from python_models.runtime.decode import InvalidImageError, probe
from python_models.runtime.tracking import NO_TRACK, Detections, SequenceLost, Streams, tracker_settings
from python_models.runtime.triton.adapter import guarded, host_array, invalid_argument, model_config, output_dims
from python_models.runtime.triton.adapter import parameter, tensors_response

IDLE_MARGIN_S = 1.0
"""How long after Triton's idle timeout this model frees a stream's tracker."""


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
        self.streams = Streams(tracker_settings(parameter(config, "tracker", "bytetrack")), idle_us / 1e6 + IDLE_MARGIN_S)
        self.max_det = output_dims(args, OUTPUT_BOXES)[0]
        # Every frame of an execution goes to the detector at once, a BLS request each (batched there by Triton; a
        # thread waits on each without the GIL): one request per frame, so a frame the detector fails fails alone.
        self.callers = ThreadPoolExecutor(max(int(config["max_batch_size"]), 1), thread_name_prefix="detect")
        labels = {"model": self.name, "instance": args["model_instance_name"]}
        # The families must outlive their metrics (the stub refuses to set a metric of a deleted family).
        self.families = [pb_utils.MetricFamily(name=TRACK_STREAMS_METRIC, kind=pb_utils.MetricFamily.GAUGE,
                                               description="Video streams this tracking instance holds"),
                         pb_utils.MetricFamily(name=TRACK_OBJECTS_METRIC, kind=pb_utils.MetricFamily.GAUGE,
                                               description="Tracks the trackers of those streams hold")]
        self.held_streams, self.held_objects = (family.Metric(labels=labels) for family in self.families)
        self.lock = threading.Lock()  # the streams, between execute and the idle sweeper
        self.stopped = threading.Event()
        self.sweeper = threading.Thread(target=self._sweep, name="idle streams", daemon=True)
        self.sweeper.start()

    def _report(self) -> None:
        self.held_streams.set(len(self.streams))
        self.held_objects.set(self.streams.objects())

    def _sweep(self) -> None:
        """Free idle streams while no frame arrives (a quiet instance would otherwise hold them until its next
        execution)."""
        while not self.stopped.wait(min(self.streams.idle_s / 4, 1.0)):
            with self.lock:
                if self.streams.free_idle(time.monotonic()):
                    self._report()

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
        detections = list(self.callers.map(self._detect, requests))
        with self.lock:
            responses = self._track(requests, detections)
            self._report()
        return responses

    def _track(self, requests, detections):
        now = time.monotonic()
        self.streams.free_idle(now)
        responses = []
        for request, detected in zip(requests, detections):
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
            try:
                ids[0, :count] = self.streams.frame(stream, frame, now, start, end)
            except SequenceLost:
                responses.append(invalid_argument(self.lost_message(stream)))
                continue
            responses.append(tensors_response({**detected, OUTPUT_TRACK_IDS: ids}))
        return responses

    def lost_message(self, stream) -> str:
        """Triton's refusal of a frame of a sequence it does not hold (core ``sequence_batch_scheduler.cc``), which
        clients already act on, and why this model does not hold it."""
        return (f"inference request for sequence {stream} to model '{self.name}' must specify the START flag on the "
                f"first request of the sequence (this tracking instance let the stream go after "
                f"{self.streams.idle_s:g} s without a frame)")

    def finalize(self) -> None:
        self.stopped.set()
        self.callers.shutdown(wait=False)
