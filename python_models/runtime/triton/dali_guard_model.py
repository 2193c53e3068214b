"""Track D's first step, one per tier: refuse bad rows on the CPU, have the tier's DALI leaf decode and letterbox the
rest on the GPU, and keep an image that DALI cannot decode from failing its batch-mates.

Triton's DALI backend has no per-request error path: when its decoder fails on one image, every request of that
batch gets the same UNKNOWN error (``ExecuteBatched`` in the backend's ``dali_model_instance.cc``), and it applies
no size limit. So, for each batch of requests:

1. every row is probed (``decode.probe``: format, header, truncation, PNG chunk CRCs, the pixel limit; no
   decoding), and a request with a bad row is answered INVALID_ARGUMENT naming the row, as on every other track;
2. the rows of every other request go to the DALI leaf through BLS in one request (a few when their lengths differ
   widely: ``preprocess.padded_groups``), zero-padded to the longest as the rows of one client request are, so one
   inter-process round trip serves the whole batch; the leaf's answer, left where DALI put it (on the GPU), is split
   back into one response per request without a copy;
3. a request whose DALI batch failed (a JPEG whose scan is damaged behind intact headers, in this request or in any
   other of that batch) is decoded and letterboxed on the CPU, as tracks B and C do: its rows get the answer they
   would have got, and a row OpenCV cannot read either fails its own request alone, INVALID_ARGUMENT naming it.
   Only a failed batch costs CPU; ``contract.DALI_CPU_FALLBACK_METRIC`` counts the rows and the log says why.

The leaf's UNAVAILABLE, CANCELLED and NOT_FOUND (it is busy past its queue's timeout, stopping, or not loaded) are
passed on unchanged: overload must not turn into CPU decoding. The guard's own queue bounds what it sends: its
instances never hold more requests than the leaf's queue takes. Config parameters: ``dali_model``, the leaf to
call; ``decode_threads``, the threads of the CPU fallback (0: as Track A's).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import triton_python_backend_utils as pb_utils

from python_models.contract import DALI_CPU_FALLBACK_METRIC, INPUT_IMAGES, LETTERBOX_TRANSFORM, LETTERBOXED_IMAGES
from python_models.runtime.decode import padded_groups, probe, stack_padded
from python_models.runtime.triton.adapter import (BatchBuffer, error_response, guarded, input_array,
                                                   letterboxed_responses, model_config, output_dims, parameter,
                                                   read_rows, thread_pool)

OUTPUTS = [LETTERBOXED_IMAGES, LETTERBOX_TRANSFORM]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import cv2

        config = model_config(args)
        self.name = config["name"]
        self.leaf = parameter(config, "dali_model", "")
        if not self.leaf:
            raise ValueError(f"{self.name}: parameter dali_model (the DALI leaf this step calls) is not set")
        # What the CPU must not take over: the leaf is busy, stopping or gone. Anything else (the DALI backend's UNKNOWN
        # for a failed batch) is answered on the CPU. Triton 2.51's BLS reports every error as INTERNAL (2.69 keeps
        # the leaf's code), so there everything is.
        error = pb_utils.TritonError
        self.passed_on = {error.UNAVAILABLE, error.CANCELLED, error.NOT_FOUND}
        self.buffer = BatchBuffer(output_dims(args, LETTERBOXED_IMAGES)[0])
        cv2.setNumThreads(1)
        self.pool = thread_pool(args, "decode_threads")
        # BLS calls block (without the GIL) until the leaf answers; the few of one batch go out together.
        self.callers = ThreadPoolExecutor(4, thread_name_prefix="bls")
        # The family must outlive its metric (the stub refuses to count into a deleted family).
        self.fallback_family = pb_utils.MetricFamily(
            name=DALI_CPU_FALLBACK_METRIC, kind=pb_utils.MetricFamily.COUNTER,
            description="Rows Track D decoded on the CPU because the DALI leaf failed their batch")
        self.fallback_rows = self.fallback_family.Metric(labels={"model": self.name, "dali_model": self.leaf})

    def execute(self, requests):
        return guarded(requests, self._run)

    def _call_leaf(self, images):
        return pb_utils.InferenceRequest(model_name=self.leaf, requested_output_names=OUTPUTS, inputs=[images]).exec()

    def _run(self, requests):
        _, outcome = read_rows(requests, probe)
        responses = [error_response(item) if isinstance(item, Exception) else None for item in outcome]
        checked = [i for i, item in enumerate(outcome) if not isinstance(item, Exception)]
        arrays = [input_array(requests[i], INPUT_IMAGES) for i in checked]
        groups = padded_groups([a.shape for a in arrays])
        # A request alone passes its own input tensor on; several are stacked into one.
        calls = [pb_utils.get_input_tensor_by_name(requests[checked[group[0]]], INPUT_IMAGES) if len(group) == 1
                 else pb_utils.Tensor(INPUT_IMAGES, stack_padded([arrays[g] for g in group])) for group in groups]
        failed, rows, reasons = [], 0, set()
        for group, answer in zip(groups, self.callers.map(self._call_leaf, calls)):
            indices = [checked[g] for g in group]
            if not answer.has_error():
                counts = [len(arrays[g]) for g in group]
                for index, tensors in zip(indices, split_tensors(answer.output_tensors(), counts)):
                    responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            elif answer.error().code() in self.passed_on:
                for index in indices:
                    responses[index] = pb_utils.InferenceResponse(error=answer.error())
            else:
                failed += indices
                rows += sum(len(arrays[g]) for g in group)
                reasons.add(answer.error().message().strip().splitlines()[0][:300])
        if failed:
            # What tracks B and C do: each request's own answer, or its own INVALID_ARGUMENT.
            on_cpu = letterboxed_responses([requests[i] for i in failed], self.buffer, self.pool)
            for index, response in zip(failed, on_cpu):
                responses[index] = response
            self.fallback_rows.increment(rows)
            print(f"{self.name}: {self.leaf} failed a batch holding {len(failed)} of this step's requests ({rows} "
                  f"rows): {'; '.join(sorted(reasons))}; those were decoded on the CPU", flush=True)
        return responses

    def finalize(self) -> None:
        self.callers.shutdown(wait=False)
        if self.pool is not None:
            self.pool.shutdown(wait=False)


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
