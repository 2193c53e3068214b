"""Runtime logic for serving Ultralytics YOLO11 detection on Triton.

Pure functions (decode, letterbox, NMS, rescale) live in their own modules and
never import Triton; the ``python_models.triton`` subpackage holds the thin
``TritonPythonModel`` adapters that ``model_repository/*/1/model.py`` point at.
"""
