"""The CPU profile's stand-ins for the TensorRT and DALI leaves: same names, I/O and batching, the same artifacts
(the exported ONNX in ONNX Runtime with ``efficient_nms`` for the plugin; the same DALI graph on DALI's CPU
operators), and the same failures (a DALI batch with one bad row fails every request in it)."""
