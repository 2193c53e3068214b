"""CPU-profile twin of a Track D DALI leaf: the same DALI graph (``python_models.dali_letterbox``), decoded on the CPU.

Rows are checked by ``python_models.decode.probe`` first, so a bad image is refused
alone with the Foundation's messages rather than failing the whole DALI batch. A
corrupt image that passes the header checks makes DALI fail the batch and leaves
its pipeline unusable: the twin rebuilds it and retries row by row, so only the
request holding that image gets the error. (The GPU profile's DALI backend has no
such check: there a corrupt image fails every request batched with it.)
"""

from __future__ import annotations

import os

import numpy as np

from python_models.contract import INPUT_IMAGES, LETTERBOX_TRANSFORM, LETTERBOXED_IMAGES
from python_models.dali_letterbox import letterbox_pipeline
from python_models.decode import InvalidImageError, probe
from python_models.triton.adapter import guarded, model_config, read_rows, respond


def _checked(row: np.ndarray) -> tuple[np.ndarray, str]:
    return row, probe(row).format


def _reason(exc: Exception) -> str:
    """The line of DALI's multi-line error that names the problem."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    after = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line == "encountered:"]
    return (after or lines or [type(exc).__name__])[0]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.max_batch = model_config(args)["max_batch_size"]
        self.pipe = self._build()

    def _build(self):
        pipe = letterbox_pipeline(batch_size=self.max_batch, num_threads=os.cpu_count() or 1, device_id=None,
                                  decoder_device="cpu", prefetch_queue_depth=1)
        pipe.build()
        return pipe

    def _letterbox(self, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.pipe.feed_input(INPUT_IMAGES, rows)
        images, transforms = self.pipe.run()
        return images.as_array(), transforms.as_array()

    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        checked, outcome = read_rows(requests, _checked)
        if not checked:
            return respond(outcome, lambda _: {})
        try:
            images, transforms = self._letterbox([row for row, _ in checked])
        except RuntimeError:
            self.pipe = self._build()
            return self._one_by_one(checked, outcome)
        return respond(outcome, lambda r: {LETTERBOXED_IMAGES: images[r], LETTERBOX_TRANSFORM: transforms[r]})

    def _one_by_one(self, checked: list[tuple[np.ndarray, str]], outcome: list) -> list:
        """After a failed batch: letterbox row by row, so the error names the request and row that caused it."""
        results = {}
        for index, item in enumerate(outcome):
            if not isinstance(item, slice):
                continue
            rows = checked[item]
            parts = []
            for row_index, (row, fmt) in enumerate(rows):
                try:
                    parts.append(self._letterbox([row]))
                except RuntimeError as exc:
                    self.pipe = self._build()
                    where = f"images[{row_index}]" if len(rows) > 1 else "images"
                    outcome[index] = InvalidImageError(
                        f"{where}: corrupt {fmt}: the decoder could not read the pixel data ({_reason(exc)})")
                    break
            else:
                results[item.start, item.stop] = tuple(np.concatenate(p) for p in zip(*parts))
        return respond(outcome, lambda r: dict(zip((LETTERBOXED_IMAGES, LETTERBOX_TRANSFORM), results[r.start, r.stop])))
