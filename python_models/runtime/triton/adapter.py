"""What every Python-backend model here does the same way: read rows, answer errors, build responses."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TypeVar

import numpy as np
import triton_python_backend_utils as pb_utils

from python_models.contract import INPUT_IMAGES, LETTERBOX_TRANSFORM, LETTERBOXED_IMAGES, TRANSFORM_SPEC, ModelSpec
from python_models.runtime.decode import InvalidImageError, decode
from python_models.runtime.threads import map_rows
from python_models.runtime.letterbox import LetterboxTransform, letterbox_rgb

T = TypeVar("T")


def version_dir(args: dict) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def model_config(args: dict) -> dict:
    return json.loads(args["model_config"])


def parameter(config: dict, name: str, default: str) -> str:
    """A string parameter of the model config, or ``default``."""
    return config.get("parameters", {}).get(name, {}).get("string_value", default)


def threads_per_instance(args: dict, name: str = "decode_threads", on_gpu: bool = False) -> int:
    """The threads this instance decodes (or post-processes) on: the config parameter ``name`` when above 0, else
    twice the cores this server may use shared out over every instance on the host (``decode_threads``)."""
    from python_models.runtime.threads import available_cores, decode_threads

    config = model_config(args)
    gpus = 0
    if on_gpu:
        import torch

        gpus = torch.cuda.device_count()
    return decode_threads(int(parameter(config, name, "0") or 0), available_cores(), config.get("instance_group", []),
                          gpus)


def thread_pool(args: dict, name: str = "decode_threads", on_gpu: bool = False) -> Executor | None:
    """A pool of ``threads_per_instance`` threads; None for one (the work then runs in the calling thread)."""
    from concurrent.futures import ThreadPoolExecutor

    threads = threads_per_instance(args, name, on_gpu)
    return ThreadPoolExecutor(threads, thread_name_prefix=name) if threads > 1 else None


def model_spec(args: dict) -> ModelSpec:
    """The exported detector's facts and thresholds, from this model's ``metadata`` parameter."""
    return ModelSpec.from_config(model_config(args))


def output_dims(args: dict, name: str) -> list[int]:
    """Per-row dims of one of this model's outputs, as its config states them."""
    (dims,) = [o["dims"] for o in model_config(args)["output"] if o["name"] == name]
    return [int(d) for d in dims]


def input_array(request, name: str) -> np.ndarray:
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


def invalid_argument(message: str):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))


def unknown_error(message: str):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.UNKNOWN))


def internal_error(message: str):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL))


def host_array(tensor) -> np.ndarray:
    """An output tensor of a BLS answer as a host array, wherever the called model left it."""
    if tensor.is_cpu():
        return tensor.as_numpy()
    from torch.utils import dlpack

    return dlpack.from_dlpack(tensor.to_dlpack()).cpu().numpy()


def tensors_response(arrays: dict[str, np.ndarray]):
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, value) for name, value in arrays.items()])


class BatchBuffer:
    """A letterboxed-batch array reused across executions of one model instance.

    A fresh 1.2 MB-per-image array costs a page fault per 4 KB on first touch (with float32
    rows, a third of the letterbox time). Reuse is safe because the stub copies output
    tensors into shared memory before it calls ``execute`` again.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._array = np.empty((0, size, size, 3), dtype=np.uint8)

    def rows(self, count: int) -> np.ndarray:
        if count > len(self._array):
            self._array = np.empty((count, self.size, self.size, 3), dtype=np.uint8)
        return self._array[:count]


def read_rows(requests: Sequence, read: Callable[[np.ndarray], T], pool: Executor | None = None
              ) -> tuple[list[T], list[slice | Exception]]:
    """Apply ``read`` to every image row of every request, in order (on ``pool``'s threads when given).

    Returns the results of the good requests' rows, flattened, and per request either
    the slice of that list holding its rows or the error that rejects it alone (a
    bad row rejects its whole request, and the message names the row).
    """
    flat, counts = image_rows(requests)

    def attempt(row: np.ndarray) -> T | InvalidImageError:
        try:
            return read(row)
        except InvalidImageError as exc:
            return exc

    values = map_rows(attempt, flat, pool)
    results, outcome, _ = group_rows(counts, values)
    return results, outcome


def image_rows(requests: Sequence) -> tuple[list[np.ndarray], list[int]]:
    """Every image row of every request, in order, and how many each request holds."""
    per_request = [input_array(request, INPUT_IMAGES) for request in requests]
    return [row for rows in per_request for row in rows], [len(rows) for rows in per_request]


def group_rows(counts: Sequence[int], values: Sequence[T | InvalidImageError]
               ) -> tuple[list[T], list[slice | Exception], list[int]]:
    """Per-row ``values`` of requests holding ``counts`` rows each, to the good requests' values (flattened), per
    request the slice of those holding its rows or the error that rejects it alone (a bad row rejects its whole
    request, and the message names the row), and the indices into ``values`` that were kept."""
    results: list[T] = []
    outcome: list[slice | Exception] = []
    kept: list[int] = []
    start = 0
    for count in counts:
        mine = values[start : start + count]
        bad = next(((i, v) for i, v in enumerate(mine) if isinstance(v, InvalidImageError)), None)
        if bad is not None:
            where = f"images[{bad[0]}]" if count > 1 else "images"
            outcome.append(InvalidImageError(f"{where}: {bad[1]}"))
        else:
            outcome.append(slice(len(results), len(results) + count))
            results.extend(mine)
            kept.extend(range(start, start + count))
        start += count
    return results, outcome, kept


def letterbox_requests(
    requests: Sequence, buffer: BatchBuffer, pool: Executor | None = None
) -> tuple[np.ndarray, list[LetterboxTransform], list[slice | Exception]]:
    """Decode and letterbox every image row of every request into one batch (on ``pool``'s threads when given:
    OpenCV and numpy's copies release the GIL, and each row is written by one thread only).

    Returns the batch, one transform per good row and, per request, either the
    slice of the batch that holds its rows or the error that rejects it alone.
    """
    images, outcome = read_rows(requests, decode, pool)
    batch = buffer.rows(len(images))

    def place(row: int) -> LetterboxTransform:
        return letterbox_rgb(images[row], buffer.size, out=batch[row])[1]

    transforms = map_rows(place, range(len(images)), pool)
    return batch, transforms, outcome


def letterboxed_responses(requests: Sequence, buffer: BatchBuffer, pool: Executor | None = None) -> list:
    """Tracks B and C's preprocessing, one response per request: its letterboxed rows and their transforms, or its
    own error (``letterbox_requests``)."""
    batch, transforms, outcome = letterbox_requests(requests, buffer, pool)
    params = transform_array(transforms)
    return respond(outcome, lambda rows: {LETTERBOXED_IMAGES: batch[rows], LETTERBOX_TRANSFORM: params[rows]})


def transform_array(transforms: Sequence[LetterboxTransform]) -> np.ndarray:
    """The ``LETTERBOX_TRANSFORM`` rows of a batch (``[rows, 6]`` float32, zero rows for none)."""
    return (np.stack([t.to_array() for t in transforms]) if transforms
            else np.zeros((0, *TRANSFORM_SPEC.dims), TRANSFORM_SPEC.dtype))


def letterbox_on_gpu(requests: Sequence, size: int, decoder, canvas, pool: Executor | None = None):
    """Every image row of every request decoded and letterboxed into the device batch ``canvas`` (JPEGs by
    ``decoder``, the others on ``pool``'s threads: ``gpu_decode.letterbox_rows``). Returns the good requests' rows
    (a ``[rows, size, size, 3]`` BGR uint8 device tensor, or None when no request is good), one transform per
    row and, per request, the slice of those rows that holds its images or the error that rejects it alone."""
    import torch

    from python_models.runtime.gpu_decode import letterbox_rows

    rows, counts = image_rows(requests)
    values = letterbox_rows(rows, size, decoder, canvas, pool)
    transforms, outcome, kept = group_rows(counts, values)
    good = [i for i, value in enumerate(values) if not isinstance(value, InvalidImageError)]
    if not kept:
        return None, transforms, outcome
    if len(kept) == len(good):
        return canvas[: len(good)], transforms, outcome
    # A request rejected for another row had good rows in the batch: leave them out.
    position = {index: k for k, index in enumerate(good)}
    return canvas[torch.tensor([position[i] for i in kept], device=canvas.device)], transforms, outcome


def device_tensors_response(tensors: dict):
    """A response of torch tensors on a GPU (handed over without a copy, through DLPack) or numpy arrays."""
    from torch.utils import dlpack

    return pb_utils.InferenceResponse(output_tensors=[
        pb_utils.Tensor(name, value) if isinstance(value, np.ndarray)
        else pb_utils.Tensor.from_dlpack(name, dlpack.to_dlpack(value)) for name, value in tensors.items()])


def error_response(item: Exception):
    """INVALID_ARGUMENT for bad client data, INTERNAL for anything else."""
    if isinstance(item, InvalidImageError):
        return invalid_argument(str(item))
    return internal_error(f"{type(item).__name__}: {item}")


def respond(outcome: Sequence[slice | Exception], build: Callable[[slice], dict[str, np.ndarray]]) -> list:
    """One response per request: its slice of the batch results, or its own error."""
    return [error_response(item) if isinstance(item, Exception) else tensors_response(build(item)) for item in outcome]


def respond_each(requests: Sequence, outcome: Sequence[slice | Exception], build: Callable[[object], dict]) -> list:
    """One response per request, built from the request itself (``build(request)``), or its own error."""
    return [error_response(item) if isinstance(item, Exception) else tensors_response(build(request))
            for request, item in zip(requests, outcome)]


def log_fault(what: str) -> None:
    """The traceback of the exception being handled, into the server's log (the stub's stderr goes there)."""
    print(f"{what}\n{traceback.format_exc()}", file=sys.stderr, flush=True)


def guarded(requests: Sequence, run: Callable[[Sequence], list]) -> list:
    """Run a batch; a bug or resource error answers every request with INTERNAL, with the traceback in the server
    log, instead of killing the stub. Bad client data never gets here: it is answered INVALID_ARGUMENT per request."""
    try:
        return run(requests)
    except Exception as exc:  # noqa: BLE001 - reported to each client, logged with its traceback
        log_fault(f"INTERNAL error answering {len(requests)} request(s):")
        return [internal_error(f"{type(exc).__name__}: {exc}") for _ in requests]
