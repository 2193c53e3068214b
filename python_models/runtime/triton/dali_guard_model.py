"""Track D's first step, one per tier: refuse bad rows on the CPU, have the tier's DALI leaf decode and letterbox the
rest on the GPU, and keep an image that DALI cannot decode from failing, or changing, its batch-mates' answers.

Triton's DALI backend has no per-request error path: when its decoder fails on one image, every request of that
batch gets the same UNKNOWN error (``ExecuteBatched`` in the backend's ``dali_model_instance.cc``), and it applies
no size limit. So, for each batch of requests:

1. every row is probed (``decode.probe``: format, header, truncation, a JPEG scan its headers cannot decode, PNG
   chunk CRCs, the pixel limit; no decoding), and a request with a bad row is answered INVALID_ARGUMENT naming the
   row, as on every other track;
2. the rows of every other request go to the DALI leaf through BLS in one request (a few when their lengths differ
   widely: ``preprocess.padded_groups``), zero-padded to the longest as the rows of one client request are, so one
   inter-process round trip serves the whole batch; the leaf's answer, left where DALI put it (on the GPU), is split
   back into one response per request without a copy;
3. when the leaf fails such a request (damage only a decoder finds, behind intact headers), its requests are sent
   again in two parts (the request holding the sample DALI's error names, and the others; halves when it names none),
   and a part that fails is split again, down to one request, and a request of several rows that fails alone row by
   row: every request and row DALI can decode gets DALI's pixels, as alone (the leaf does
   not batch across calls, so a call is decoded as it was sent). A row DALI refuses on its own is decoded and
   letterboxed on the CPU, as Track A does with a row nvJPEG refuses: OpenCV's answer, or INVALID_ARGUMENT naming
   the row when OpenCV cannot read it either. ``contract.DALI_CPU_FALLBACK_METRIC`` counts those rows; the log says
   why.

A leaf that is not loaded (it failed to load, or was unloaded) is never worked around: every request is answered
UNAVAILABLE naming the leaf, and the gauge ``contract.DALI_LEAF_READY_METRIC`` says 0 (kept by every call, and by a
thread that asks the leaf every ``LEAF_PROBE_S`` until it answers), so ``yolo11-triton check server`` and Prometheus
name it; the launcher's report does, from the server's model states. The leaf's
UNAVAILABLE and CANCELLED (busy past its queue's timeout, stopping) are passed on unchanged: overload must not turn
into CPU decoding. Config parameter: ``dali_model``, the leaf to call.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from python_models.contract import DALI_CPU_FALLBACK_METRIC, DALI_LEAF_READY_METRIC, INPUT_IMAGES, LETTERBOX_TRANSFORM
from python_models.contract import LETTERBOXED_IMAGES
from python_models.runtime.decode import InvalidImageError, decode, padded_groups, probe, stack_padded
from python_models.runtime.letterbox import letterbox_rgb
from python_models.runtime.triton.adapter import (error_response, guarded, host_array, input_array, invalid_argument,
                                                   model_config, output_dims, parameter, read_rows, tensors_response,
                                                   transform_array)

OUTPUTS = [LETTERBOXED_IMAGES, LETTERBOX_TRANSFORM]
LEAF_PROBE_S = 2.0
"""How often a guard that has not yet seen its leaf answer asks it (one tiny JPEG), for the readiness gauge."""
NOT_LOADED = ("' is not ready", "request for unknown model")
"""What a BLS call to a model that is not loaded says (python_backend ``request_executor.cc``: "Model '...' is not
ready."; one the server never knew: "Request for unknown model: '...' is not found"), whatever its code (Triton's BLS
reports INTERNAL); narrow enough that no decoder's error reads so."""
REFUSED = object()
"""A request (or row) the leaf refuses on its own."""


def _probe_jpeg() -> np.ndarray:
    import cv2

    return np.frombuffer(cv2.imencode(".jpg", np.full((16, 16, 3), 114, np.uint8))[1].tobytes(), np.uint8)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import cv2

        config = model_config(args)
        self.name = config["name"]
        self.leaf = parameter(config, "dali_model", "")
        if not self.leaf:
            raise ValueError(f"{self.name}: parameter dali_model (the DALI leaf this step calls) is not set")
        error = pb_utils.TritonError
        self.passed_on = {error.UNAVAILABLE, error.CANCELLED}
        self.size = output_dims(args, LETTERBOXED_IMAGES)[0]
        cv2.setNumThreads(1)
        # BLS calls block (without the GIL) until the leaf answers; the few of one batch, or of one round of halving a
        # failed one, go out together.
        self.callers = ThreadPoolExecutor(4, thread_name_prefix="bls")
        labels = {"model": self.name, "dali_model": self.leaf}
        # The families must outlive their metrics (the stub refuses to count into a deleted family).
        self.families = [
            pb_utils.MetricFamily(name=DALI_CPU_FALLBACK_METRIC, kind=pb_utils.MetricFamily.COUNTER,
                                  description="Rows Track D decoded on the CPU because the DALI leaf refused them alone"),
            pb_utils.MetricFamily(name=DALI_LEAF_READY_METRIC, kind=pb_utils.MetricFamily.GAUGE,
                                  description="1 while the DALI leaf this Track D guard calls is loaded, else 0")]
        self.fallback_rows, self.leaf_ready = (family.Metric(labels=labels) for family in self.families)
        self.probe_row = pb_utils.Tensor(INPUT_IMAGES, _probe_jpeg()[None])
        self.ready = False
        self.leaf_ready.set(0)
        self.stopped = threading.Event()
        self.prober = threading.Thread(target=self._watch_leaf, name="leaf readiness", daemon=True)
        self.prober.start()

    def _watch_leaf(self) -> None:
        """Ask the leaf until it has answered once, and again whenever a call found it not loaded: the leaf may load
        after this step (BLS calls are no dependency), or never. Calls of real traffic keep the gauge right
        meanwhile, so a serving leaf is not asked at all."""
        while not self.stopped.wait(LEAF_PROBE_S):
            if not self.ready:
                self._note(self._call_leaf(self.probe_row))

    def _not_loaded(self, answer) -> bool:
        return answer.has_error() and any(text in answer.error().message().lower() for text in NOT_LOADED)

    def _note(self, answer) -> None:
        self.ready = not self._not_loaded(answer)
        self.leaf_ready.set(int(self.ready))

    def execute(self, requests):
        return guarded(requests, self._run)

    def _call_leaf(self, images):
        return pb_utils.InferenceRequest(model_name=self.leaf, requested_output_names=OUTPUTS, inputs=[images]).exec()

    def _call(self, arrays: list[np.ndarray], tensor=None):
        """The leaf's answer for these requests' rows stacked into one request (``tensor``: a request's own input)."""
        return self._call_leaf(tensor if tensor is not None else pb_utils.Tensor(INPUT_IMAGES, stack_padded(arrays)))

    def _run(self, requests):
        _, outcome = read_rows(requests, probe)
        responses = [error_response(item) if isinstance(item, Exception) else None for item in outcome]
        checked = [i for i, item in enumerate(outcome) if not isinstance(item, Exception)]
        arrays = {i: input_array(requests[i], INPUT_IMAGES) for i in checked}
        groups = [[checked[g] for g in group] for group in padded_groups([arrays[i].shape for i in checked])]
        # A request alone passes its own input tensor on; several are stacked into one.
        calls = [self.callers.submit(self._call, [arrays[i] for i in group],
                                     pb_utils.get_input_tensor_by_name(requests[group[0]], INPUT_IMAGES)
                                     if len(group) == 1 else None) for group in groups]
        settled: dict[int, object] = {}
        reasons: set[str] = set()
        for group, call in zip(groups, calls):
            settled.update(self._settle(group, call.result(), arrays, reasons))
        refused = [i for i, value in settled.items() if value is REFUSED]
        for index, value in settled.items():
            if value is not REFUSED:
                responses[index] = value
        if refused:
            self._refused_alone(refused, arrays, responses, reasons)
        return responses

    def _settle(self, group: list[int], answer, arrays: dict, reasons: set[str]) -> dict[int, object]:
        """Per request of ``group``: its response from the leaf's ``answer`` for the group, ``REFUSED``, or (when the
        leaf failed the group) what sending its halves again gives."""
        self._note(answer)
        if not answer.has_error():
            parts = split_tensors(answer.output_tensors(), [len(arrays[i]) for i in group])
            return {index: pb_utils.InferenceResponse(output_tensors=tensors) for index, tensors in zip(group, parts)}
        if self._not_loaded(answer):
            message = (f"{self.name}: its DALI leaf {self.leaf} is not loaded (it failed to load: the server log and "
                       f"the launcher's report say why), so Track D cannot decode: {answer.error().message()}")
            return {index: pb_utils.InferenceResponse(error=pb_utils.TritonError(
                message, pb_utils.TritonError.UNAVAILABLE)) for index in group}
        if answer.error().code() in self.passed_on:
            return {index: pb_utils.InferenceResponse(error=answer.error()) for index in group}
        reasons.add(answer.error().message().strip().splitlines()[0][:300])
        if len(group) == 1:
            return {group[0]: REFUSED}
        halves = split_failed(group, [len(arrays[i]) for i in group], answer.error().message())
        answers = list(self.callers.map(lambda half: self._call([arrays[i] for i in half]), halves))
        settled: dict[int, object] = {}
        for half, half_answer in zip(halves, answers):
            settled.update(self._settle(half, half_answer, arrays, reasons))
        return settled

    def _refused_alone(self, refused: list[int], arrays: dict, responses: list, reasons: set[str]) -> None:
        """Requests the leaf refuses on their own: a request of several rows is sent again row by row (one of a
        single row was just refused alone), and only the rows the leaf refuses alone are decoded on the CPU."""
        rows_on_cpu = 0
        for index in refused:
            rows = arrays[index]
            answers = list(self.callers.map(lambda row: self._call([row[None]]), rows)) if len(rows) > 1 else [None]
            responses[index], cpu_rows = self._rows_response(rows, answers)
            rows_on_cpu += cpu_rows
        self.fallback_rows.increment(rows_on_cpu)
        print(f"{self.name}: {self.leaf} refused {rows_on_cpu} row(s) of {len(refused)} request(s) on their own "
              f"({'; '.join(sorted(reasons))}); those rows were decoded on the CPU, every other row by DALI",
              flush=True)

    def _rows_response(self, rows: np.ndarray, answers: list):
        """The response of a request from the leaf's answer for each of its rows alone (None: refused), and how many
        rows were decoded on the CPU: those the leaf refused, as Track A decodes a row nvJPEG refuses; a row OpenCV
        cannot read either refuses the request, naming it."""
        images, transforms, on_cpu = [], [], 0
        for k, (row, answer) in enumerate(zip(rows, answers)):
            if answer is None or answer.has_error():
                on_cpu += 1
                try:
                    image, transform = letterbox_rgb(decode(row), self.size)
                except InvalidImageError as exc:
                    return invalid_argument(f"{f'images[{k}]' if len(rows) > 1 else 'images'}: {exc}"), on_cpu
                images.append(image[None])
                transforms.append(transform_array([transform]))
            else:
                tensors = {t.name(): host_array(t) for t in answer.output_tensors()}
                images.append(tensors[LETTERBOXED_IMAGES])
                transforms.append(tensors[LETTERBOX_TRANSFORM])
        return tensors_response({LETTERBOXED_IMAGES: np.concatenate(images),
                                 LETTERBOX_TRANSFORM: np.concatenate(transforms)}), on_cpu

    def finalize(self) -> None:
        self.stopped.set()
        self.callers.shutdown(wait=False)


FAILED_SAMPLE = re.compile(r"sample #(\d+)")
"""How DALI names the sample of a batch its decoder failed on ("Failed to decode sample #7")."""


def split_failed(group: list[int], counts: list[int], message: str) -> list[list[int]]:
    """The parts a failed call's requests (holding ``counts`` rows each) are sent again in: the request holding the
    sample DALI's ``message`` names, and the others (two calls, where that request was the only bad one); halves when
    the message names no sample of the call."""
    named = FAILED_SAMPLE.search(message)
    if named and int(named.group(1)) < sum(counts):
        row, start = int(named.group(1)), 0
        for position, count in enumerate(counts):
            if row < start + count:
                return [[group[position]], group[:position] + group[position + 1 :]]
            start += count
    return [group[: len(group) // 2], group[len(group) // 2 :]]


def split_tensors(tensors: list, counts: list[int]) -> list[list]:
    """The leaf's output tensors for one BLS request, as one list of tensors per client request holding ``counts``
    rows each: on the GPU views of the same memory through DLPack (nothing is copied there), on the host copies."""
    if len(counts) == 1:
        return [tensors]
    parts: list[list] = [[] for _ in counts]
    for tensor in tensors:
        if tensor.is_cpu():
            whole, wrap = tensor.as_numpy(), lambda view: pb_utils.Tensor(tensor.name(), view)
        else:
            import torch.utils.dlpack as dlpack  # only where the leaf answers on the GPU

            whole = dlpack.from_dlpack(tensor.to_dlpack())
            wrap = lambda view: pb_utils.Tensor.from_dlpack(tensor.name(), dlpack.to_dlpack(view))  # noqa: E731
        start = 0
        for part, count in zip(parts, counts):
            part.append(wrap(whole[start : start + count]))
            start += count
    return parts
