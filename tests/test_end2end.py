"""The End2End graph TensorRT builds Tracks C and D from: the plugin node, the un-letterbox, the engine plans."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import SAMPLE_NAMES
from onnx import TensorProto, shape_inference

from python_models import contract as c
from python_models.export import repository as repo
from python_models.runtime.decode import decode
from python_models.export.end2end import OP_TYPE, nms_attributes, nms_node
from python_models.export.engine_build import engine_specs
from python_models.export.artifacts import FP16_ONNX, end2end_onnx, raw_onnx
from python_models.client.matching import differences
from python_models.runtime.letterbox import letterbox_rgb
from python_models.runtime.nms import nms, pack_detections
from python_models.serving.twins.onnx_session import open_session


@pytest.fixture(scope="module")
def end2end(server) -> onnx.ModelProto:
    return onnx.load(str(end2end_onnx(server.artifacts)))


def _shape(info) -> list:
    return [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]


def test_the_plugin_node_has_the_efficientnms_contract(end2end, spec):
    node = nms_node(end2end)
    assert node.op_type == OP_TYPE == "EfficientNMS_TRT"
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attributes.pop("plugin_version") == b"1"
    assert attributes == {
        "score_threshold": pytest.approx(spec.conf), "iou_threshold": pytest.approx(spec.iou),
        "max_output_boxes": spec.max_det, "background_class": -1, "score_activation": 0,
        "class_agnostic": 0, "box_coding": 1,  # the head's boxes are centre-x, centre-y, w, h
    }
    # The plugin keeps scores >= its threshold, Ultralytics > conf: the threshold is the next float32 above conf.
    assert np.float32(nms_attributes(spec).score_threshold) == np.nextafter(np.float32(spec.conf), np.float32(1))
    assert nms_attributes(spec).max_output_boxes == spec.max_det
    # Inputs: boxes [B, anchors, 4] and scores [B, anchors, classes], as the plugin takes them.
    inferred = shape_inference.infer_shapes(end2end)
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    boxes, scores = (known[name] for name in node.input)
    assert _shape(boxes)[1:] == [spec.num_anchors, 4], _shape(boxes)
    assert _shape(scores)[1:] == [spec.num_anchors, spec.num_classes], _shape(scores)
    assert all(known[name].type.tensor_type.elem_type == TensorProto.FLOAT for name in node.input)
    # Outputs: the plugin's names are the contract's, except the boxes, which are un-letterboxed after it.
    assert list(node.output)[0] == c.OUTPUT_NUM_DETECTIONS
    assert list(node.output)[2:] == [c.OUTPUT_SCORES, c.OUTPUT_CLASSES]
    plugin_outputs = [(known[name].type.tensor_type.elem_type, _shape(known[name])[1:]) for name in node.output]
    k = spec.max_det
    assert plugin_outputs == [(TensorProto.INT32, [1]), (TensorProto.FLOAT, [k, 4]),
                              (TensorProto.FLOAT, [k]), (TensorProto.INT32, [k])], plugin_outputs


def test_graph_io_is_the_contract(end2end, spec):
    inputs = {i.name: i for i in end2end.graph.input}
    assert list(inputs) == [c.ONNX_INPUT, c.LETTERBOX_TRANSFORM]
    assert _shape(inputs[c.ONNX_INPUT])[1:] == [spec.imgsz, spec.imgsz, 3], "uint8 RGB HWC, as preprocessing hands it"
    assert inputs[c.ONNX_INPUT].type.tensor_type.elem_type == TensorProto.UINT8
    assert _shape(inputs[c.LETTERBOX_TRANSFORM])[1:] == [len(c.TRANSFORM_FIELDS)]
    types = {TensorProto.INT32: np.dtype(np.int32), TensorProto.FLOAT: np.dtype(np.float32)}
    outputs = [(o.name, types[o.type.tensor_type.elem_type], _shape(o)[1:]) for o in end2end.graph.output]
    assert outputs == [(s.name, s.dtype, list(s.dims)) for s in spec.public_outputs()]
    assert all(isinstance(_shape(o)[0], str) for o in end2end.graph.output), "dynamic batch"


def _letterboxed(sample_dir, names, size: int):
    pairs = [letterbox_rgb(decode((sample_dir / name).read_bytes()), size) for name in names]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]


def test_end2end_graph_answers_what_track_b_answers(server, sample_dir, spec):
    """Same network, same NMS decisions, boxes mapped back in the graph: outputs equal Track B's Python steps."""
    images, transforms = _letterboxed(sample_dir, SAMPLE_NAMES, server.spec.imgsz)
    raw = open_session(raw_onnx(server.artifacts)).run(None, {c.ONNX_INPUT: images})[0]
    expected = pack_detections(nms(raw, spec), transforms, spec.max_det)
    session = open_session(end2end_onnx(server.artifacts))
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {c.ONNX_INPUT: images,
                                             c.LETTERBOX_TRANSFORM: np.stack([t.to_array() for t in transforms])})))
    assert expected[c.OUTPUT_NUM_DETECTIONS].min() > 0, "every sample image must have detections to compare"
    for tensor in spec.public_outputs():
        assert got[tensor.name].dtype == tensor.dtype and got[tensor.name].shape == (len(SAMPLE_NAMES), *tensor.dims)
    np.testing.assert_array_equal(got[c.OUTPUT_NUM_DETECTIONS], expected[c.OUTPUT_NUM_DETECTIONS])
    np.testing.assert_array_equal(got[c.OUTPUT_CLASSES], expected[c.OUTPUT_CLASSES])
    np.testing.assert_allclose(got[c.OUTPUT_SCORES], expected[c.OUTPUT_SCORES], atol=1e-6)
    np.testing.assert_allclose(got[c.OUTPUT_BOXES], expected[c.OUTPUT_BOXES], atol=1e-3)


def test_unletterbox_in_the_graph_uses_the_transform(server, sample_dir):
    """The same letterboxed tensor with another transform gives boxes mapped by that transform, clipped to it."""
    images, (transform,) = _letterboxed(sample_dir, ["bus.jpg"], server.spec.imgsz)
    session = open_session(end2end_onnx(server.artifacts))
    doubled = transform.to_array().copy()
    doubled[:2] /= 2  # gain halved: every box twice as large in a twice-as-large original
    doubled[4:] *= 2
    runs = [dict(zip([o.name for o in session.get_outputs()],
                     session.run(None, {c.ONNX_INPUT: images, c.LETTERBOX_TRANSFORM: t[None]})))
            for t in (transform.to_array(), doubled)]
    n = int(runs[0][c.OUTPUT_NUM_DETECTIONS][0, 0])
    assert n > 0
    np.testing.assert_allclose(runs[1][c.OUTPUT_BOXES][0, :n], runs[0][c.OUTPUT_BOXES][0, :n] * 2, rtol=1e-5, atol=1e-3)
    boxes = runs[0][c.OUTPUT_BOXES][0, :n]
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= transform.width and boxes[:, [1, 3]].max() <= transform.height
    assert not runs[0][c.OUTPUT_BOXES][0, n:].any(), "padding rows stay zero after the un-letterbox"


def test_each_tier_has_its_own_engine_sized_to_its_batch(tmp_path):
    defs = repo.definitions_by_name(repo.default_spec())
    specs = {s.model: s for s in engine_specs(tmp_path, repo.default_spec())}
    assert set(specs) == {n for n, d in defs.items() if d.config.platform == "tensorrt_plan"}
    engines = []
    for tier in c.DALI_TIERS:
        steps = repo.request_path(repo.dali_ensemble_name(tier), defs)
        assert steps == [repo.dali_guard_name(tier), repo.dali_preprocess_name(tier), repo.dali_end2end_name(tier)]
        engine = defs[repo.dali_end2end_name(tier)].config
        assert engine.max_batch_size == tier.max_batch_size == defs[repo.dali_preprocess_name(tier)].config.max_batch_size
        spec = specs[engine.name]
        for low, opt, high in spec.profiles.values():
            assert (low[0], high[0]) == (1, engine.max_batch_size), (engine.name, low, high)
            assert low[0] <= opt[0] <= high[0]
        assert set(spec.profiles) == {c.ONNX_INPUT, c.LETTERBOX_TRANSFORM}
        assert spec.onnx == end2end_onnx(tmp_path).with_name(FP16_ONNX) and spec.plan.parent.parent.name == engine.name
        engines.append(engine.name)
    assert len(set(engines)) == len(c.DALI_TIERS)
    assert specs[repo.RAW_TRT].onnx == raw_onnx(tmp_path).with_name(FP16_ONNX)
    assert specs[repo.END2END_TRT].onnx == end2end_onnx(tmp_path).with_name(FP16_ONNX)
    fp32 = {s.model: s for s in engine_specs(tmp_path, repo.default_spec(), "fp32")}
    assert fp32[repo.END2END_TRT].onnx == end2end_onnx(tmp_path) and fp32[repo.RAW_TRT].onnx == raw_onnx(tmp_path)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = shape_inference.infer_shapes(model)
    return {v.name: v.type.tensor_type.elem_type
            for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}


def test_the_best_class_is_chosen_by_index_never_by_float_equality(end2end):
    types = _types(end2end)
    initializers = {i.name: i.data_type for i in end2end.graph.initializer}
    post_head = [n for n in end2end.graph.node if n.name.startswith("end2end/")]
    assert any(n.op_type == "ArgMax" for n in post_head)
    for node in end2end.graph.node:
        if node.op_type == "Equal":
            kinds = {types.get(name, initializers.get(name)) for name in node.input}
            assert kinds <= {TensorProto.INT32, TensorProto.INT64}, f"{node.name} compares floats: {kinds}"


def _run(path, images, transforms):
    session = open_session(path)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {c.ONNX_INPUT: images, c.LETTERBOX_TRANSFORM: transforms})))


def _detections(outputs):
    from python_models.client import unpack_detections

    return unpack_detections(outputs)


def test_the_fp16_graph_keeps_the_post_head_in_fp32_and_detects_what_fp32_detects(server, sample_dir, spec):
    """The graph FP16 engines are built from (strongly typed): network FP16, selection and un-letterbox FP32."""
    fp16_path = end2end_onnx(server.artifacts).with_name(FP16_ONNX)
    fp16 = onnx.load(str(fp16_path))
    network = [i for i in fp16.graph.initializer if not i.name.startswith(("end2end/", "input/"))]
    assert network and all(i.data_type != TensorProto.FLOAT or "Resize" in i.name or "Constant" in i.name
                           for i in network), "the network's weights are FP16"
    assert sum(i.data_type == TensorProto.FLOAT16 for i in network) > 100
    types = _types(fp16)
    for node in fp16.graph.node:
        if node.name.startswith(("end2end/", "input/")) and node.op_type not in ("Cast",):
            floats = [types[n] for n in [*node.input, *node.output] if types.get(n) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
            assert TensorProto.FLOAT16 not in floats, f"{node.name} ({node.op_type}) computes in FP16"
    assert [i.type.tensor_type.elem_type for i in fp16.graph.input] == [TensorProto.UINT8, TensorProto.FLOAT]
    images, transforms = _letterboxed(sample_dir, SAMPLE_NAMES, server.spec.imgsz)
    params = np.stack([t.to_array() for t in transforms])
    full = _detections(_run(end2end_onnx(server.artifacts), images, params))
    half = _detections(_run(fp16_path, images, params))
    for name, got, ref in zip(SAMPLE_NAMES, half, full):
        assert len(ref) > 0, f"{name}: FP32 detects nothing, so the comparison would prove nothing"
        problems = differences(got, ref, spec, 0.9, 1e-2)
        assert not problems, f"{name}: FP16 graph vs FP32 graph: {problems}"
    raw16 = onnx.load(str(raw_onnx(server.artifacts).with_name(FP16_ONNX)))
    assert [o.type.tensor_type.elem_type for o in raw16.graph.output] == [TensorProto.FLOAT]
    raw = open_session(raw_onnx(server.artifacts).with_name(FP16_ONNX)).run(None, {c.ONNX_INPUT: images})[0]
    assert [len(d) for d in nms(raw, spec)] == [int(n) for n in
                                          _run(fp16_path, images, params)[c.OUTPUT_NUM_DETECTIONS].ravel()]


def _float_equality_selection(model: onnx.ModelProto) -> onnx.ModelProto:
    """The selection this graph used to have, Equal(scores, ReduceMax(scores)), with the maximum off by the
    rounding of half precision (2**-11 relative), as when an engine computes the reduction in FP16 and
    compares it with FP32 scores. (Casts to FP16 and back cannot show it here: ONNX Runtime removes such
    cast pairs on the CPU.)"""
    from onnx import helper

    planted = onnx.ModelProto()
    planted.CopyFrom(model)
    graph = planted.graph
    kept = [n for n in graph.node if n.name not in ("end2end/best_class64", "end2end/best_class", "end2end/is_best")]
    at = next(i for i, n in enumerate(kept) if n.name == "end2end/best_class_scores")
    graph.initializer.extend([onnx.numpy_helper.from_array(np.array([2], np.int64), "planted/axis"),
                              onnx.numpy_helper.from_array(np.array(1 + 2**-11, np.float32), "planted/fp16_rounding")])
    kept[at:at] = [
        helper.make_node("ReduceMax", ["end2end/class_scores", "planted/axis"], ["planted/max"], name="planted/max",
                         keepdims=1),
        helper.make_node("Mul", ["planted/max", "planted/fp16_rounding"], ["planted/max16"], name="planted/round"),
        helper.make_node("Equal", ["end2end/class_scores", "planted/max16"], ["end2end/is_best"], name="planted/equal"),
    ]
    del graph.node[:]
    graph.node.extend(kept)
    return planted


def test_float_equality_selection_would_detect_nothing_under_mixed_precision(server, sample_dir, tmp_path):
    """What the ArgMax selection prevents, and what the FP16 detection check above would catch."""
    shipped = onnx.load(str(end2end_onnx(server.artifacts)))
    planted = tmp_path / "planted.onnx"
    onnx.save(_float_equality_selection(shipped), str(planted))
    images, transforms = _letterboxed(sample_dir, SAMPLE_NAMES, server.spec.imgsz)
    params = np.stack([t.to_array() for t in transforms])
    assert _run(planted, images, params)[c.OUTPUT_NUM_DETECTIONS].sum() == 0
    assert _run(end2end_onnx(server.artifacts), images, params)[c.OUTPUT_NUM_DETECTIONS].min() > 0
