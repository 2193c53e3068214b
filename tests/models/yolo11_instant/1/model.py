"""Answers every good row with no detections, at once; rows that are not images are refused (INVALID_ARGUMENT).

``YOLO11_INSTANT_DELAY_MS`` in the server's environment makes every execution take that long: a slower server.
"""

import os
import time

import numpy as np

from python_models.runtime.decode import probe
from python_models.runtime.triton.adapter import guarded, read_rows, respond


DELAY_S = float(os.environ.get("YOLO11_INSTANT_DELAY_MS", "0")) / 1000


class TritonPythonModel:
    def execute(self, requests):
        if DELAY_S:
            time.sleep(DELAY_S)
        return guarded(requests, self._run)

    def _run(self, requests):
        rows, outcome = read_rows(requests, probe)
        n = len(rows)
        empty = {"num_detections": np.zeros((n, 1), np.int32), "detection_boxes": np.zeros((n, 100, 4), np.float32),
                 "detection_scores": np.zeros((n, 100), np.float32), "detection_classes": np.zeros((n, 100), np.int32)}
        return respond(outcome, lambda part: {name: value[part] for name, value in empty.items()})
