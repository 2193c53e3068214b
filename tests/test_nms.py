"""NMS and packing produce the contract's fixed-size outputs with Ultralytics' decisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics.utils.nms import non_max_suppression

from python_models.contract import ModelSpec
from python_models.runtime.letterbox import LetterboxTransform
import torchvision

from python_models.contract import OUTPUT_NUM_DETECTIONS
from python_models.runtime import nms as nms_module
from python_models.runtime.nms import nms, nms_on_device, pack_detections


SPEC = ModelSpec(names=tuple(f"class{i}" for i in range(80)))
NUM_CLASSES, NUM_ANCHORS, MAX_DETECTIONS = SPEC.num_classes, SPEC.num_anchors, SPEC.max_det


def synthetic_raw(batch: int, seed: int = 0) -> np.ndarray:
    """Head output with a few strong, overlapping objects among low-score noise."""
    rng = np.random.default_rng(seed)
    raw = np.zeros((batch, 4 + NUM_CLASSES, NUM_ANCHORS), np.float32)
    raw[:, 0:2] = rng.uniform(0, 640, (batch, 2, NUM_ANCHORS))
    raw[:, 2:4] = rng.uniform(5, 120, (batch, 2, NUM_ANCHORS))
    raw[:, 4:] = rng.uniform(0, 0.2, (batch, NUM_CLASSES, NUM_ANCHORS))
    for b in range(batch):
        for k in range(12):
            anchors = rng.choice(NUM_ANCHORS, 5, replace=False)
            raw[b, 0:2, anchors] = rng.uniform(100, 500, 2) + rng.normal(0, 3, (5, 2))
            raw[b, 2:4, anchors] = 80 + rng.normal(0, 2, (5, 2))
            raw[b, 4 + k % NUM_CLASSES, anchors] = rng.uniform(0.3, 0.95, 5)
    return raw


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_nms_equals_ultralytics_over_a_batch(dtype):
    """Same rows as Ultralytics' per-image loop, bit for bit, including images with no candidate at all."""
    raw = synthetic_raw(5).astype(dtype)
    raw[1, 4:] = 0.0  # nothing above the threshold
    raw[3, 4:] = 0.1
    ours = nms(raw, SPEC)
    ref = non_max_suppression(torch.from_numpy(raw).float(), SPEC.conf, SPEC.iou, max_det=SPEC.max_det)
    assert [len(o) for o in ours] == [len(r) for r in ref]
    assert len(ours[0]) > 5 and len(ours[1]) == 0 and len(ours[3]) == 0 and len(ours[4]) > 5
    for o, r in zip(ours, ref):
        assert o.dtype == np.float32 and o.shape[1] == 6
        np.testing.assert_array_equal(o, r.numpy())
        assert np.all(np.diff(o[:, 4]) <= 0), "best score first"


def test_nms_of_an_all_empty_batch():
    ours = nms(np.zeros((2, 4 + NUM_CLASSES, NUM_ANCHORS), np.float32), SPEC)
    assert [o.shape for o in ours] == [(0, 6), (0, 6)]


def test_nms_equals_ultralytics_on_the_served_network(untrained_net_outputs):
    """The untrained test network's head output on the sample images: what Track A actually runs NMS on."""
    ours = nms(untrained_net_outputs, SPEC)
    ref = non_max_suppression(untrained_net_outputs, SPEC.conf, SPEC.iou, max_det=SPEC.max_det)
    assert sum(len(o) for o in ours) > 10
    for o, r in zip(ours, ref):
        np.testing.assert_array_equal(o, r.numpy())


def test_nms_caps_at_max_detections():
    rng = np.random.default_rng(2)
    raw = np.zeros((1, 4 + NUM_CLASSES, NUM_ANCHORS), np.float32)
    raw[0, 0:2] = rng.uniform(0, 640, (2, NUM_ANCHORS))
    raw[0, 2:4] = 2.0  # tiny boxes: nothing overlaps, so only the cap limits
    raw[0, 4] = rng.uniform(0.3, 1.0, NUM_ANCHORS)
    assert len(nms(raw, SPEC)[0]) == MAX_DETECTIONS


@pytest.mark.parametrize("conf,iou,max_det", [(0.5, 0.45, 100), (0.25, 0.7, 100), (0.25, 0.45, 7), (0.6, 0.3, 3)])
def test_nms_applies_the_exported_thresholds_as_ultralytics_does(conf, iou, max_det):
    """--conf, --iou and --max-det reach every decision: the same rows as Ultralytics with those values."""
    spec = ModelSpec(names=SPEC.names, conf=conf, iou=iou, max_det=max_det)
    rng = np.random.default_rng(4)
    raw = synthetic_raw(3, seed=4)
    raw[:, 4:] *= 0.6  # object scores from 0.18 to 0.57: a higher conf drops some
    raw[:, 0:2] += rng.normal(0, 12, raw[:, 0:2].shape).astype(np.float32)  # overlaps from about 0.5 to 0.9
    ours = nms(raw, spec)
    ref = non_max_suppression(torch.from_numpy(raw), conf, iou, max_det=max_det)
    default = nms(raw, SPEC)
    assert any(len(o) != len(d) for o, d in zip(ours, default)), "these thresholds must change the answer"
    for o, r in zip(ours, ref):
        np.testing.assert_array_equal(o, r.numpy())


def test_pack_maps_to_original_pixels_and_zero_fills():
    dets = [np.array([[80, 0, 560, 640, 0.9, 5]], np.float32), np.zeros((0, 6), np.float32)]
    t = LetterboxTransform(480 / 810, 640 / 1080, 80, 0, 810, 1080)
    packed = pack_detections(dets, [t, t], MAX_DETECTIONS)
    assert packed["num_detections"].tolist() == [[1], [0]]
    np.testing.assert_allclose(packed["detection_boxes"][0, 0], [0, 0, 810, 1080], atol=1e-3)
    assert packed["detection_classes"][0, 0] == 5 and packed["detection_classes"].dtype == np.int32
    assert not packed["detection_boxes"][0, 1:].any() and not packed["detection_boxes"][1].any()
    assert packed["detection_scores"].shape == (2, MAX_DETECTIONS)


@pytest.fixture(scope="module")
def untrained_net_outputs() -> torch.Tensor:
    from python_models.export.weights import calibration_images, untrained_detector
    from python_models.runtime.network import forward
    from python_models.runtime.letterbox import letterbox

    net = untrained_detector().model.eval()
    batch = np.stack([letterbox(image, SPEC.imgsz)[0] for image in calibration_images()])
    return forward(net, batch, torch.device("cpu"))


def device_and_host(raw, spec: ModelSpec = SPEC, seed: int = 0):
    """Track A's answers from the device path (``nms_on_device``) and from the host path (``nms`` then
    ``pack_detections``) for the same head output and transforms."""
    rng = np.random.default_rng(seed)
    transforms = [LetterboxTransform(*(float(v) for v in rng.uniform([0.3, 0.3, 0, 0, 200, 200], [1.2, 1.2, 80, 80, 1900, 1900])))
                  for _ in range(len(raw))]
    params = torch.from_numpy(np.stack([t.to_array() for t in transforms]))
    return nms_on_device(torch.as_tensor(raw), spec, params), pack_detections(nms(raw, spec), transforms, spec.max_det)


def assert_same_answers(got: dict, expected: dict) -> None:
    assert got is not None
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize("seed", range(4))
def test_nms_on_the_device_gives_the_host_path_answers_exactly(seed):
    """Same rows, order, boxes in original pixels, scores and classes, bit for bit: images with objects, with none,
    with only weak candidates, in float32 and float16 head outputs."""
    raw = synthetic_raw(6, seed)
    raw[1, 4:] = 0.0
    raw[3, 4:] = 0.1
    for dtype in (np.float32, np.float16):
        got, expected = device_and_host(raw.astype(dtype), seed=seed)
        assert expected[OUTPUT_NUM_DETECTIONS][[0, 2]].min() > 5 and expected[OUTPUT_NUM_DETECTIONS][1, 0] == 0
        assert_same_answers(got, expected)


def test_nms_on_the_device_on_the_served_network_and_past_max_det(untrained_net_outputs):
    got, expected = device_and_host(untrained_net_outputs)
    assert expected[OUTPUT_NUM_DETECTIONS].sum() > 10
    assert_same_answers(got, expected)
    few = ModelSpec(names=SPEC.names, max_det=3)  # more kept boxes than max_det: the best 3 of each image
    got, expected = device_and_host(synthetic_raw(3, 5), few)
    assert expected[OUTPUT_NUM_DETECTIONS].ravel().tolist() == [3, 3, 3]
    assert_same_answers(got, expected)


def test_nms_on_the_device_of_a_batch_without_candidates_and_one_with_too_many():
    got, expected = device_and_host(np.zeros((2, 4 + NUM_CLASSES, NUM_ANCHORS), np.float32))
    assert_same_answers(got, expected)
    crowded = synthetic_raw(2, 1)
    crowded[0, 4, : nms_module.MAX_DEVICE_CANDIDATES + 1] = 0.9
    got, _ = device_and_host(crowded)
    assert got is None, "an image over MAX_DEVICE_CANDIDATES takes the host path"


def chained_boxes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes in a row, each overlapping the next by more than the threshold: suppressions that depend on earlier
    ones (b suppresses c only if a did not suppress b), with random scores."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.uniform(3, 12, count)).astype(np.float32)
    boxes = np.stack([x, np.zeros(count), x + 40, np.full(count, 40)], 1).astype(np.float32)
    return torch.from_numpy(boxes), torch.from_numpy(rng.uniform(0.3, 1, count).astype(np.float32))


def greedy_after(boxes, scores, rounds: int | None = None):
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order][None]
    valid = torch.ones((1, len(boxes)), dtype=torch.bool)
    suppresses = nms_module.overlaps(sorted_boxes) > SPEC.iou
    if rounds is None:
        keep = nms_module.greedy_keep(suppresses, valid)
    else:  # the planted shortcut: a fixed number of rounds, as Fast NMS does in one
        keep = valid
        earlier = torch.ones((len(boxes),) * 2, dtype=torch.bool).triu_(1)
        for _ in range(rounds):
            keep = valid & ~((keep[:, :, None] & suppresses & earlier).any(1))
    return sorted(order[keep[0]].tolist())


@pytest.mark.parametrize("seed", range(5))
def test_greedy_keep_is_torchvisions_greedy_nms_on_chains_of_suppressions(seed):
    boxes, scores = chained_boxes(60, seed)
    expected = sorted(torchvision.ops.nms(boxes, scores, SPEC.iou).tolist())
    assert greedy_after(boxes, scores) == expected
    assert greedy_after(boxes, scores, rounds=1) != expected, "the chains need more than one round"


def test_eager_graphs_kept_beside_a_compiled_forward_are_the_faster_ones():
    from python_models.runtime.network import faster_eager_sizes

    measured = {1: 1.5, 2: 1.7, 4: 2.1, 8: 3.1, 16: 5.2, 32: 4.7}  # an H200, yolo11s fp16 (results/h200_issue25)
    assert faster_eager_sizes(measured, [32]) == [1, 2, 4, 8]
    assert faster_eager_sizes({1: 5.0, 2: 6.0, 32: 4.7}, [32]) == [], "a compiled forward faster everywhere"
    assert faster_eager_sizes({1: 1.0, 8: 2.0, 16: 3.0}, [8]) == [1, 16], "no compiled size covers 16"


@pytest.mark.parametrize("iou,second", [(0.45, (110, 100, 300, 200)), (0.5, (100, 100, 300, 200))])
def test_a_pair_overlapping_exactly_at_the_threshold_is_kept_on_the_device_as_on_the_host(iou, second):
    """Suppression needs an overlap above the threshold (torchvision's ``nms``, Ultralytics): at an exact tie both boxes
    stay, on the device too. The boxes are whole pixels, so their IoU is the threshold exactly in float32:
    100x100 and 190x100 overlapping 90x100 (9,000 / 20,000 = 0.45); 100x100 inside 200x100 (0.5)."""
    spec = ModelSpec(names=SPEC.names, iou=iou)
    raw = np.zeros((1, 4 + NUM_CLASSES, NUM_ANCHORS), np.float32)
    for anchor, (x1, y1, x2, y2), score in ((7, (100, 100, 200, 200), 0.9), (11, second, 0.8)):
        raw[0, :4, anchor] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        raw[0, 4, anchor] = score
    boxes = torch.tensor([[100, 100, 200, 200], second], dtype=torch.float32)
    assert torchvision.ops.box_iou(boxes[:1], boxes[1:]).item() == np.float32(iou), "the pair must tie exactly"
    ultralytics = non_max_suppression(torch.from_numpy(raw), spec.conf, spec.iou, max_det=spec.max_det)[0]
    got, expected = device_and_host(raw, spec)
    assert len(ultralytics) == 2 and expected[OUTPUT_NUM_DETECTIONS].ravel().tolist() == [2]
    assert_same_answers(got, expected)
