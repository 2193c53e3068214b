"""Track A's GPU decoding: a batch's JPEG rows decoded by nvJPEG in one call and letterboxed on the device.

On a 16-core H100 host Track A with CPU decoding is bound by the cores (about 1,500 images/s), while
nvJPEG through torchvision decodes 10,000 and more a second on that GPU. Pixels decoded there never
visit host memory: they are resized, padded and handed to the network as device tensors.

Which rows take which path (``route``): baseline and progressive JPEGs in RGB or grey go to nvJPEG,
phone photos stored turned or mirrored too: nvJPEG decodes the stored pixels and ``orient`` turns them
upright on the device (a flipped or transposed view), as OpenCV applies the EXIF orientation; PNGs and
CMYK/YCCK JPEGs take the CPU path of ``preprocess`` for that row alone. A batch call nvJPEG refuses
is retried row by row, and a row it refuses alone is decoded on the CPU; a row that decoder rejects
too fails its own request only (``letterbox_rows``).

The letterbox is ``letterbox.letterbox_padded``'s: the same geometry and ``letterbox_transform``, a
linear resize without antialiasing (``cv2.INTER_LINEAR``'s sampling, rounded from float32 where
OpenCV uses fixed point: from the same decoded pixels, at most one grey level apart), grey 114 around
it. nvJPEG's decoding itself differs from libjpeg's: on the H100, bus.jpg letterboxed came out up to 33 grey
levels (mean 0.29) from OpenCV's, and Track A still matched the Ultralytics predictor (results/h100_issue16).
On that host this took Track A from 1,438 to 2,012 images/s at concurrency 128 (p99 180 -> 101 ms).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import torch

from python_models.contract import PAD_VALUE, TRACK_A_DECODES
from python_models.runtime.decode import InvalidImageError, decode, payload, probe
from python_models.runtime.letterbox import (LetterboxTransform, letterbox_geometry, letterbox_padded, letterbox_transform)
from python_models.runtime.threads import map_rows

Decoder = Callable[[list[torch.Tensor]], list[torch.Tensor | None]]
"""Encoded JPEGs (1-D uint8 CPU tensors) to RGB CHW uint8 tensors on the device, one call for the batch, the stored
pixels (EXIF orientation not applied); raises when it cannot decode the batch, or gives None for a row it refuses."""

NVJPEG_MODES = ("RGB", "L")
"""Pillow modes nvJPEG decodes to RGB as OpenCV does (grey is replicated into three channels)."""


def decode_mode(asked: str, on_gpu: bool) -> str:
    """The ``decode`` parameter, refused when unknown or when it asks for a GPU decoder on a CPU instance."""
    if asked not in TRACK_A_DECODES:
        raise ValueError(f"parameter decode must be one of {TRACK_A_DECODES}, not {asked!r}")
    if asked != "cpu" and not on_gpu:
        raise ValueError(f"parameter decode is {asked} but this instance runs on the CPU (KIND_CPU): nvJPEG needs a "
                         "GPU instance; set decode to cpu")
    return asked


def gpu_decoder(mode: str, device: torch.device) -> Decoder | None:
    """The decoder a ``decode_mode`` names (None for ``cpu``)."""
    return {"gpu": nvjpeg_decoder, "nvimgcodec": nvimgcodec_decoder}[mode](device) if mode != "cpu" else None


def nvjpeg_decoder(device: torch.device) -> Decoder:
    """torchvision's batched nvJPEG decode onto ``device``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def run(rows: list[torch.Tensor]) -> list[torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision points image decoding at torchcodec
            return decode_jpeg(rows, mode=ImageReadMode.RGB, device=device)

    return run


NVIMGCODEC_BACKENDS = ("HW_GPU_ONLY", "GPU_ONLY")
"""nvImageCodec's decoders, in the order it tries them: the hardware JPEG engine, then its CUDA decoder."""


def nvimgcodec_decoder(device: torch.device) -> Decoder:
    """nvImageCodec's batched decode onto ``device`` by the GPU's hardware JPEG decoder (the A100/H100/H200 engine),
    its CUDA decoder for what the hardware does not take (progressive JPEGs); None for a row neither decodes.
    EXIF orientation is left to ``orient``, as with torchvision, so both decoders hand on the same stored pixels.
    Fails at load when nvImageCodec is not installed, or has no hardware decoder on this GPU."""
    try:
        from nvidia import nvimgcodec
    except ImportError as exc:
        raise RuntimeError("parameter decode is nvimgcodec but nvImageCodec is not installed in the server's Python "
                           "(pip install nvidia-nvimgcodec-cu13, or cu12 for CUDA 12); or set decode to gpu") from exc
    index = device.index if device.index is not None else torch.cuda.current_device()
    backends = [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, name)) for name in NVIMGCODEC_BACKENDS]
    decoder = nvimgcodec.Decoder(device_id=index, backends=backends)
    params = nvimgcodec.DecodeParams(apply_exif_orientation=False)

    def run(rows: list[torch.Tensor]) -> list[torch.Tensor | None]:
        images = decoder.decode([row.numpy() for row in rows], params=params)
        # from_dlpack orders the decode's stream before the current one; HWC RGB, handed on as a CHW view.
        return [torch.from_dlpack(image).permute(2, 0, 1) if image is not None else None for image in images]

    return run


@dataclass(frozen=True)
class JpegRow:
    """A row for nvJPEG: its bytes without padding, and its EXIF orientation (1 to 8)."""

    data: np.ndarray
    orientation: int = 1


ORIENTATION_FLIPS = {1: (), 2: (2,), 3: (1, 2), 4: (1,), 5: (), 6: (2,), 7: (1, 2), 8: (1,)}
"""Per EXIF orientation, the CHW dimensions to flip after transposing (orientations 5-8) or not (1-4)."""


def orient(image_chw: torch.Tensor, orientation: int) -> torch.Tensor:
    """The upright picture of a stored CHW image with that EXIF orientation: a transpose (a view) for 5-8, then the
    one flip (a copy) the orientation needs; an upright image is returned as it is. 1 upright, 2 mirrored, 3 turned
    180, 4 flipped, 5 transposed, 6 stored turned 90 counter-clockwise (phones' portrait photos), 7 transverse, 8
    stored turned 90 clockwise."""
    if orientation not in ORIENTATION_FLIPS:
        raise ValueError(f"EXIF orientation must be 1 to 8, not {orientation}")
    image = image_chw.transpose(1, 2) if orientation >= 5 else image_chw
    dims = ORIENTATION_FLIPS[orientation]
    return image.flip(dims) if dims else image


Letterboxed = tuple[np.ndarray, LetterboxTransform]
"""A row letterboxed on the CPU (``letterbox_padded``: BGR HWC uint8)."""


def route(row: np.ndarray) -> JpegRow | None:
    """``JpegRow`` for a row nvJPEG can take, None for one the CPU must decode; ``InvalidImageError`` for a row no
    path accepts (the header check every track applies)."""
    data = payload(row)
    header = probe(data)
    if header.format == "JPEG" and header.mode in NVJPEG_MODES and 1 <= header.orientation <= 8:
        return JpegRow(data, header.orientation)
    return None


def cpu_letterbox(row: np.ndarray, size: int) -> Letterboxed:
    return letterbox_padded(decode(row), size)


def decode_on_device(rows: Sequence[JpegRow], decoder: Decoder) -> list[torch.Tensor | None]:
    """Every row decoded in one call; when that call fails, row by row; None for each row the decoder refuses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # request tensors are read-only; the decoder only reads them
        tensors = [torch.from_numpy(row.data) for row in rows]
    try:
        return list(decoder(tensors))
    except Exception:  # one bad row fails nvJPEG's whole batch: find it, keep the others on the GPU
        decoded: list[torch.Tensor | None] = []
        for tensor in tensors:
            try:
                decoded.append(decoder([tensor])[0])
            except Exception:
                decoded.append(None)
        return decoded


def letterbox_on_device(images: Sequence[torch.Tensor], size: int, out: torch.Tensor,
                        slots: Sequence[int] | None = None, orientations: Sequence[int] | None = None
                        ) -> list[LetterboxTransform]:
    """Letterbox RGB CHW uint8 images, each turned upright by its EXIF orientation (default 1), into rows ``slots``
    (default 0, 1, ...) of ``out``, a ``[rows, size, size, 3]`` uint8 tensor of BGR images as ``letterbox_padded``
    makes them and ``network.forward_padded`` takes them.

    Images of the same size are resized in one call, as frames of a stream or photos of one camera are. (On an
    H200 this runs at about 27,000 images/s for bus.jpg and zidane.jpg in batches of 32: not what bounds Track A,
    results/h200_issue25.)
    """
    slots = list(range(len(images))) if slots is None else list(slots)
    if not slots:
        return []
    if orientations is not None:
        images = [orient(image, o) for image, o in zip(images, orientations)]
    out[torch.tensor(slots, device=out.device)] = PAD_VALUE
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(tuple(image.shape[1:]), []).append(index)
    transforms: list = [None] * len(images)
    for (height, width), indices in by_size.items():
        new_h, new_w, top, left = letterbox_geometry(height, width, size)
        batch = torch.stack([images[i] for i in indices])
        if (new_h, new_w) != (height, width):
            resized = torch.nn.functional.interpolate(batch.float(), size=(new_h, new_w), mode="bilinear",
                                                      align_corners=False, antialias=False)
            batch = resized.round_().clamp_(0, 255).to(torch.uint8)
        rows = torch.tensor([slots[i] for i in indices], device=out.device)
        out[rows, top : top + new_h, left : left + new_w] = batch.permute(0, 2, 3, 1).flip(-1)  # RGB CHW -> BGR HWC
        for i in indices:
            transforms[i] = letterbox_transform(height, width, size)
    return transforms


def letterbox_rows(rows: Sequence[np.ndarray], size: int, decoder: Decoder, out: torch.Tensor,
                   pool: Executor | None = None, cpu: Callable[[np.ndarray, int], Letterboxed] = cpu_letterbox
                   ) -> list[LetterboxTransform | InvalidImageError]:
    """Decode and letterbox every row into ``out[:k]`` (k: the rows that succeed, in order); per row, its transform
    or the error that rejects it.

    Headers are read on the calling thread: reading one is Python holding the GIL, so threads cannot share the work
    and handing each row to one costs more than the read. The rows nvJPEG cannot take are decoded on ``pool``'s
    threads (OpenCV releases the GIL), the JPEG rows by ``decoder`` in one call. ``cpu`` decodes and letterboxes a row on
    the CPU (``cpu_letterbox``).
    """
    def routed(row: np.ndarray) -> JpegRow | None | InvalidImageError:
        try:
            return route(row)
        except InvalidImageError as exc:
            return exc

    def on_cpu(index: int) -> Letterboxed | InvalidImageError:
        try:
            return cpu(rows[index], size)
        except InvalidImageError as exc:
            return exc

    values: list = [routed(row) for row in rows]
    not_jpeg = [i for i, value in enumerate(values) if value is None]
    for index, value in zip(not_jpeg, map_rows(on_cpu, not_jpeg, pool)):
        values[index] = value
    jpeg_at = [i for i, value in enumerate(values) if isinstance(value, JpegRow)]
    decoded = dict(zip(jpeg_at, decode_on_device([values[i] for i in jpeg_at], decoder))) if jpeg_at else {}
    refused = [i for i, image in decoded.items() if image is None]
    for index, value in zip(refused, map_rows(on_cpu, refused, pool)):
        values[index] = value
    good = [i for i, value in enumerate(values) if not isinstance(value, InvalidImageError)]
    slot = {index: k for k, index in enumerate(good)}
    results: list[LetterboxTransform | InvalidImageError] = list(values)
    on_device = [i for i in good if decoded.get(i) is not None]
    transforms = letterbox_on_device([decoded[i] for i in on_device], size, out, [slot[i] for i in on_device],
                                     [values[i].orientation for i in on_device])
    for i, transform in zip(on_device, transforms):
        results[i] = transform
    for i in good:
        if decoded.get(i) is None:
            image, transform = values[i]
            out[slot[i]].copy_(torch.from_numpy(image))
            results[i] = transform
    return results
