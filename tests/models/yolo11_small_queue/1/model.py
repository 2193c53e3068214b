"""yolo11_instant's model (tests/models/yolo11_instant/1/model.py), loaded from its file, not linked: the stub
supervisor names a stub's model by its model.py path. This folder's config gives it a queue of 2 requests of 1."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "yolo11_instant_model", Path(__file__).parents[2] / "yolo11_instant" / "1" / "model.py")
_instant = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_instant)
TritonPythonModel = _instant.TritonPythonModel
