"""ONNX Runtime sessions for the graphs TensorRT builds engines from, TensorRT plugins included.

A graph holding ``EfficientNMS_TRT`` runs with ``python_models.serving.twins.efficient_nms`` registered
as an ONNX Runtime custom op (onnxruntime-extensions' Python ops). That mechanism
serves ops of one domain only, so the plugin node is moved to it in memory; the
file on disk, which TensorRT parses, is left as exported.

onnxruntime-extensions hands float attributes to Python with six significant digits
(0.2500000298 arrives as 0.25), while TensorRT reads the float32 exactly. So the
thresholds also travel as exact decimal strings, added to the node in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from python_models.export.end2end import OP_TYPE, EfficientNMSAttributes

_registered = False
_FLOAT_ATTRIBUTES = ("score_threshold", "iou_threshold")
_EXACT = "_exact"


def _register_efficient_nms() -> str:
    """Register the op once per process; return the domain ONNX Runtime serves it under."""
    global _registered
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    # Here, not at the top: the NMS brings torch and torchvision (3 s of CPU per process), which the raw
    # networks' twins never need.
    from python_models.serving.twins.efficient_nms import efficient_nms

    if not _registered:
        attrs = {"score_threshold": PyCustomOpDef.dt_float, "iou_threshold": PyCustomOpDef.dt_float,
                 **{name + _EXACT: PyCustomOpDef.dt_string for name in _FLOAT_ATTRIBUTES},
                 "max_output_boxes": PyCustomOpDef.dt_int64, "background_class": PyCustomOpDef.dt_int64,
                 "score_activation": PyCustomOpDef.dt_int64, "class_agnostic": PyCustomOpDef.dt_int64,
                 "box_coding": PyCustomOpDef.dt_int64, "plugin_version": PyCustomOpDef.dt_string}

        @onnx_op(op_type=OP_TYPE, attrs=attrs,
                 inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float],
                 outputs=[PyCustomOpDef.dt_int32, PyCustomOpDef.dt_float, PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32])
        def _efficient_nms(boxes: np.ndarray, scores: np.ndarray, plugin_version: str = "1", **kwargs):
            for name in _FLOAT_ATTRIBUTES:
                exact = kwargs.pop(name + _EXACT, "")
                if exact:
                    kwargs[name] = float(exact)
            return efficient_nms(boxes, scores, EfficientNMSAttributes(**kwargs))

        _registered = True
    return "ai.onnx.contrib"


def open_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """A CPU session for ``path``; ``threads`` 0 lets ONNX Runtime use every core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = onnx.load(str(path))
    plugins = [node for node in model.graph.node if node.op_type == OP_TYPE]
    if not plugins:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    from onnxruntime_extensions import get_library_path

    domain = _register_efficient_nms()
    for node in plugins:
        node.domain = domain
        for attribute in list(node.attribute):
            if attribute.name in _FLOAT_ATTRIBUTES:
                node.attribute.append(onnx.helper.make_attribute(attribute.name + _EXACT, repr(attribute.f)))
    if all(opset.domain != domain for opset in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    options.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
