"""The CPU profile's stand-ins for the TensorRT and DALI leaves: same names, I/O and batching, the same artifacts
(the exported ONNX in ONNX Runtime with ``efficient_nms`` for the plugin; the same DALI graph on DALI's CPU
operators), and the same failures (a DALI batch with one bad row fails every request in it).

Three more serve ``yolo11-triton check guard-gpu`` only, on a GPU host without the DALI backend: a stand-in for a DALI leaf
that leaves its answer on the GPU (``dali_gpu_standin_model``), a step reporting where its input arrived
(``placement_probe_model``), and Track D's former probe-only front step as a baseline (``probe_only_guard_model``)."""

FAIL_LOAD_ENV = "YOLO11_TWIN_FAIL_LOAD"
"""Comma-separated leaf names whose twin raises in ``initialize`` (tests of a leaf that failed to load: on a GPU host a
DALI leaf fails so when the backend cannot serialise its ``dali.py``)."""
