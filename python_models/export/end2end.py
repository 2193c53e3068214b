"""The End2End ONNX graph: YOLO11 head -> best-class scores -> EfficientNMS_TRT -> boxes in original pixels.

Built by appending nodes to the raw export, so Tracks B and C run the same network. Both graphs take the
letterboxed image as uint8 RGB HWC (``uint8_input_graph``): preprocessing hands the engines a quarter of
the bytes of the network's float32 input, and the cast, the 1/255 and the transpose run in the engine.
TensorRT's ONNX parser maps the unknown ``EfficientNMS_TRT`` op to its plugin; the
CPU profile runs the same graph with ``python_models.serving.twins.efficient_nms`` standing in.

Two choices keep Track C's answers equal to Ultralytics' (and so to Tracks A and B):
- Ultralytics keeps one class per anchor, the best; the plugin would run NMS over
  every class above the threshold. Scores other than an anchor's best are zeroed.
- Ultralytics runs NMS in letterboxed pixels, then maps boxes back and clips them.
  Clipping first could change overlaps, so the mapping follows NMS, over its
  ``max_output_boxes`` rows only. Padding rows stay zero: (0 - pad) / gain clips to 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxslim
from onnx import TensorProto, helper, numpy_helper

from python_models import contract as c

# TensorRT's EfficientNMS_TRT plugin as the graph names it (TensorRT plugin/efficientNMSPlugin/README.md).
OP_TYPE = "EfficientNMS_TRT"
PLUGIN_VERSION = "1"
BOX_CORNERS = 0
BOX_CENTER_SIZE = 1


@dataclass(frozen=True)
class EfficientNMSAttributes:
    """The plugin's ONNX node attributes (``plugin_version`` aside), with its defaults."""

    score_threshold: float
    iou_threshold: float
    max_output_boxes: int
    background_class: int = -1
    score_activation: int = 0
    class_agnostic: int = 0
    box_coding: int = BOX_CORNERS


PLUGIN_DOMAIN = "TRT"
"""Any domain works for TensorRT's parser (it matches on op type); ONNX needs the op to be in one."""

def nms_attributes(spec: c.ModelSpec) -> EfficientNMSAttributes:
    """The plugin's attributes for the exported model: its thresholds are compiled into every End2End engine."""
    return EfficientNMSAttributes(
        # The plugin keeps scores >= its threshold, Ultralytics keeps scores > conf. The next float32 above conf
        # makes the two agree; it matters under FP16, where many scores round to exactly the threshold.
        score_threshold=float(np.nextafter(np.float32(spec.conf), np.float32(1))),
        iou_threshold=spec.iou,
        max_output_boxes=spec.max_det,
        background_class=-1,
        score_activation=0,  # the YOLO11 head already applies the sigmoid
        class_agnostic=0,
        box_coding=BOX_CENTER_SIZE,  # the head emits centre-x, centre-y, w, h
    )

BATCH = "batch"
_P = "end2end/"  # prefix of every tensor and node this module adds after the head
_IN = "input/"  # prefix of the nodes ``uint8_input_graph`` puts before the network
NMS_BOXES = _P + "letterboxed_boxes"
NETWORK_INPUT = _IN + "images_normalised"
"""The float32 CHW [0, 1] tensor the network reads, made from the uint8 input."""


def _dims(*dims: int | str) -> list[int | str]:
    return list(dims)


def is_uint8_input(model: onnx.ModelProto) -> bool:
    return model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8


def uint8_input_graph(raw: onnx.ModelProto) -> onnx.ModelProto:
    """The raw export reading ``images`` as uint8 RGB HWC ``[batch, height, width, 3]`` instead of float32 CHW in [0, 1].

    On entry: Cast to float32, Transpose to CHW, Mul by float32(1/255), the steps and order of
    ``letterbox.network_input`` (and of Ultralytics' predictor), so the network reads the very
    floats it read before. TensorRT wants a uint8 network input consumed by a Cast, hence the cast first.
    """
    (image,) = raw.graph.input
    dims = image.type.tensor_type.shape.dim
    if (image.name != c.ONNX_INPUT or image.type.tensor_type.elem_type != TensorProto.FLOAT or len(dims) != 4
            or dims[1].dim_value != 3):
        raise ValueError(f"expected the raw export's float32 {c.ONNX_INPUT!r} [batch, 3, height, width], got "
                         f"{onnx.helper.printable_value_info(image)}")
    model = _copy(raw)
    graph = model.graph
    for node in graph.node:
        node.input[:] = [NETWORK_INPUT if name == image.name else name for name in node.input]
    graph.initializer.append(numpy_helper.from_array(np.array(1 / 255, np.float32), _IN + "scale"))
    prelude = [
        helper.make_node("Cast", [image.name], [_IN + "images_float"], name=_IN + "cast", to=TensorProto.FLOAT),
        helper.make_node("Transpose", [_IN + "images_float"], [_IN + "images_chw"], name=_IN + "chw", perm=[0, 3, 1, 2]),
        helper.make_node("Mul", [_IN + "images_chw", _IN + "scale"], [NETWORK_INPUT], name=_IN + "scale"),
    ]
    nodes = prelude + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    batch, _, height, width = (d.dim_param or d.dim_value for d in dims)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(image.name, TensorProto.UINT8, [batch, height, width, 3]))
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def _spatial_dims(model: onnx.ModelProto) -> slice:
    """Where height and width sit in the image input: HWC for the uint8 graphs, CHW for the float one."""
    return slice(1, 3) if is_uint8_input(model) else slice(2, 4)


def fixed_size_graph(raw: onnx.ModelProto, size: int) -> onnx.ModelProto:
    """The raw export with its spatial size fixed to the served one, re-slimmed.

    Engines only ever see letterboxed square images. Fixing the spatial dims lets onnxslim
    fold the head's shape arithmetic (anchor grids built with Range and Cast) into constants,
    which gives the plugin static input shapes and leaves a graph of plain tensor arithmetic.
    """
    model = onnx.ModelProto()
    model.CopyFrom(raw)
    shape = model.graph.input[0].type.tensor_type.shape
    for dim, value in zip(shape.dim[_spatial_dims(model)], (size, size)):
        dim.Clear()
        dim.dim_value = value
    shape.dim[0].Clear()
    shape.dim[0].dim_param = BATCH
    del model.graph.value_info[:]  # shapes inferred for a dynamic height and width
    return onnxslim.slim(model)


def end2end_graph(raw: onnx.ModelProto, spec: c.ModelSpec) -> onnx.ModelProto:
    """The End2End model of ``spec``: inputs ``images`` and ``letterbox_transform``, outputs the public contract."""
    (image_input,) = raw.graph.input
    (raw_output,) = raw.graph.output
    if image_input.name != c.ONNX_INPUT or raw_output.name != c.ONNX_RAW_OUTPUT:
        raise ValueError(f"expected the raw export's {c.ONNX_INPUT!r} -> {c.ONNX_RAW_OUTPUT!r}, "
                         f"got {image_input.name!r} -> {raw_output.name!r}")
    model = fixed_size_graph(raw, spec.imgsz)
    graph = model.graph

    graph.initializer.extend([
        numpy_helper.from_array(np.array([4, spec.num_classes], np.int64), _P + "split_sizes"),
        numpy_helper.from_array(np.arange(spec.num_classes, dtype=np.int32), _P + "class_ids"),
        numpy_helper.from_array(np.array([1], np.int64), _P + "row_axis"),
        numpy_helper.from_array(np.array(0, np.float32), _P + "zero"),
        numpy_helper.from_array(np.array([2, 2, 2], np.int64), _P + "transform_split"),
    ])
    nodes = [
        helper.make_node("Transpose", [c.ONNX_RAW_OUTPUT], [_P + "predictions"], perm=[0, 2, 1]),
        helper.make_node("Split", [_P + "predictions", _P + "split_sizes"], [_P + "boxes_cxcywh", _P + "class_scores"], axis=2),
        # The best class by index, never by comparing floats: under FP16 TensorRT may compute a
        # ReduceMax and the scores it is compared with in different precisions, and then an
        # Equal(scores, max) is false everywhere and nothing is detected. ArgMax takes the first
        # of tied classes, as Ultralytics' ``max(1)`` does.
        helper.make_node("ArgMax", [_P + "class_scores"], [_P + "best_class64"], axis=2, keepdims=1),
        helper.make_node("Cast", [_P + "best_class64"], [_P + "best_class"], to=TensorProto.INT32),
        helper.make_node("Equal", [_P + "class_ids", _P + "best_class"], [_P + "is_best"]),
        helper.make_node("Where", [_P + "is_best", _P + "class_scores", _P + "zero"], [_P + "best_class_scores"]),
        helper.make_node(
            OP_TYPE, [_P + "boxes_cxcywh", _P + "best_class_scores"],
            [c.OUTPUT_NUM_DETECTIONS, NMS_BOXES, c.OUTPUT_SCORES, c.OUTPUT_CLASSES],
            name=_P + "nms", domain=PLUGIN_DOMAIN, plugin_version=PLUGIN_VERSION,
            **asdict(nms_attributes(spec)),
        ),
        # letterbox_transform = gain_x, gain_y, pad_x, pad_y, width, height -> per-corner [B, 1, 4] factors.
        helper.make_node("Split", [c.LETTERBOX_TRANSFORM, _P + "transform_split"],
                         [_P + "gain", _P + "pad", _P + "size"], axis=1),
        *[node for part in ("gain", "pad", "size") for node in (
            helper.make_node("Concat", [_P + part, _P + part], [_P + part + "_xyxy"], axis=1),
            helper.make_node("Unsqueeze", [_P + part + "_xyxy", _P + "row_axis"], [_P + part + "_rows"]),
        )],
        helper.make_node("Sub", [NMS_BOXES, _P + "pad_rows"], [_P + "unpadded"]),
        helper.make_node("Div", [_P + "unpadded", _P + "gain_rows"], [_P + "unscaled"]),
        helper.make_node("Max", [_P + "unscaled", _P + "zero"], [_P + "clipped_low"]),
        helper.make_node("Min", [_P + "clipped_low", _P + "size_rows"], [c.OUTPUT_BOXES]),
    ]
    for node in nodes:
        node.name = node.name or _P + node.output[0].removeprefix(_P)
    graph.node.extend(nodes)

    k = spec.max_det
    graph.input.append(helper.make_tensor_value_info(c.LETTERBOX_TRANSFORM, TensorProto.FLOAT,
                                                     _dims(BATCH, *c.TRANSFORM_SPEC.dims)))
    # The plugin's outputs, typed as its README states; shape inference knows nothing of the op.
    graph.value_info.append(helper.make_tensor_value_info(NMS_BOXES, TensorProto.FLOAT, _dims(BATCH, k, 4)))
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(c.OUTPUT_NUM_DETECTIONS, TensorProto.INT32, _dims(BATCH, 1)),
        helper.make_tensor_value_info(c.OUTPUT_BOXES, TensorProto.FLOAT, _dims(BATCH, k, 4)),
        helper.make_tensor_value_info(c.OUTPUT_SCORES, TensorProto.FLOAT, _dims(BATCH, k)),
        helper.make_tensor_value_info(c.OUTPUT_CLASSES, TensorProto.INT32, _dims(BATCH, k)),
    ])
    model.opset_import.append(helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return onnx.shape_inference.infer_shapes(model)


def nms_node(model: onnx.ModelProto) -> onnx.NodeProto:
    (node,) = [n for n in model.graph.node if n.op_type == OP_TYPE]
    return node


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def post_head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes this module appended after the network: best class, NMS, un-letterbox."""
    return [node.name for node in model.graph.node if node.name.startswith(_P)]


FP32_ONLY_INPUTS = {"Resize": (1, 2)}
"""Inputs ONNX requires in FP32 whatever the data's type (Resize's roi and scales)."""


def fp16_graph(model: onnx.ModelProto, size: int) -> onnx.ModelProto:
    """The same graph with the network in FP16 and everything after the head kept in FP32.

    The FP16 engines are built from this graph as strongly typed TensorRT networks: TensorRT
    then computes each tensor in the type this graph gives it, so the best-class selection,
    NMS and the un-letterbox stay FP32 by construction, and what ONNX Runtime proves on this
    file is what the engine computes. The network's input is cast to FP16 on entry and the head
    output back to FP32; graph inputs and outputs keep their types, so the contract does not
    change with precision. A raw graph (nothing appended) gets its size fixed first
    (``fixed_size_graph``, at ``size``) and becomes FP16 up to its output.

    Like Ultralytics' own FP16 exports, the head's box decoding is FP16 too: coordinates
    between 512 and 640 letterboxed pixels are then multiples of 0.5.

    Written here rather than with onnxconverter-common, whose converter cast tensors inside
    the blocked post-head nodes and left Resize outputs mistyped on this very graph.
    """
    out = model if post_head_nodes(model) else fixed_size_graph(model, size)
    out = _copy(out)
    graph = out.graph
    post_head = set(post_head_nodes(out))
    prelude = [node for node in graph.node if node.name.startswith(_IN)]
    network = [node for node in graph.node if node.name not in post_head and not node.name.startswith(_IN)]
    fp32_inputs = {node.input[i] for node in network for i in FP32_ONLY_INPUTS.get(node.op_type, ()) if i < len(node.input)}
    used_after_head = {name for node in graph.node if node.name in post_head for name in node.input}
    used_by_network = {name for node in network for name in node.input}
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or init.name in fp32_inputs or init.name not in used_by_network:
            continue
        if init.name in used_after_head:
            raise ValueError(f"initializer {init.name} is shared by the network and the post-head nodes")
        values = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(np.clip(values, -65504, 65504).astype(np.float16), init.name))
    for node in network:
        if node.op_type == "Cast" and helper.get_attribute_value(node.attribute[0]) == TensorProto.FLOAT:
            raise ValueError(f"{node.name} casts to FP32 inside the network; not handled")
        if node.op_type in ("Constant", "ConstantOfShape"):
            raise ValueError(f"{node.name}: {node.op_type} nodes inside the network are not handled")

    image = NETWORK_INPUT if prelude else graph.input[0].name
    head = c.ONNX_RAW_OUTPUT
    image16, head16 = _P + "images_fp16", _P + "head_fp16"
    for node in network:
        node.input[:] = [image16 if name == image else name for name in node.input]
        node.output[:] = [head16 if name == head else name for name in node.output]
    first = [helper.make_node("Cast", [image], [image16], name=_P + "images_fp16", to=TensorProto.FLOAT16)]
    last = [helper.make_node("Cast", [head16], [head], name=_P + "head_fp32", to=TensorProto.FLOAT)]
    nodes = prelude + first + network + last + [node for node in graph.node if node.name in post_head]
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [v for v in graph.value_info if v.name == NMS_BOXES]  # the plugin's output: inference cannot type it
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return onnx.shape_inference.infer_shapes(out)
