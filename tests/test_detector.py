"""The untrained test network is deterministic and detects something on real photos."""

from __future__ import annotations

import numpy as np
import torch

from python_models.export.weights import calibration_images, untrained_detector
from python_models.runtime.letterbox import letterbox
from python_models.runtime.nms import nms
from python_models.contract import ModelSpec


def test_untrained_detector_is_deterministic_and_image_dependent():
    a, b = untrained_detector(), untrained_detector()
    batch = torch.from_numpy(np.stack([letterbox(i, 640)[0] for i in calibration_images()[:2]]))
    with torch.no_grad():
        ya = a.model.eval()(batch)[0]
        yb = b.model.eval()(batch)[0]
    torch.testing.assert_close(ya, yb)
    detections = nms(ya, ModelSpec(names=tuple(a.names.values())))
    assert all(len(d) > 0 for d in detections), "the test weights must detect on the sample images"
    assert not np.allclose(detections[0][:3, :4], detections[1][:3, :4]), "boxes must depend on the image"


def test_uint8_path_to_the_device_equals_the_cpu_letterbox_path():
    """Track A ships letterboxed uint8 and normalises on the device: the network sees the same tensor."""
    import cv2
    import numpy as np
    import torch
    from ultralytics.utils import ASSETS

    from python_models.runtime.network import forward, forward_padded
    from python_models.export.weights import untrained_detector
    from python_models.runtime.letterbox import letterbox, letterbox_padded

    net = untrained_detector().model.fuse().eval()
    image = cv2.imread(str(ASSETS / "zidane.jpg"))
    padded, transform = letterbox_padded(image, 640)
    floats, same_transform = letterbox(image, 640)
    assert transform == same_transform
    via_uint8 = forward_padded(net, padded[None], torch.device("cpu"))
    via_float = forward(net, floats[None], torch.device("cpu"))
    assert torch.equal(via_uint8, torch.as_tensor(via_float)), "the two input paths must be bit-identical on the CPU"


def test_cuda_graph_sizes_cover_every_batch_the_batcher_can_form():
    from python_models.runtime.network import graph_batch_sizes

    assert graph_batch_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert graph_batch_sizes(24) == [1, 2, 4, 8, 16, 24]
    assert graph_batch_sizes(1) == [1]
    for max_batch in (1, 3, 24, 32, 64):
        sizes = graph_batch_sizes(max_batch)
        assert all(any(s >= n for s in sizes) for n in range(1, max_batch + 1)) and max(sizes) == max_batch


def test_what_a_forward_caches_on_the_modules_is_found_so_each_cuda_graph_can_keep_its_own():
    """Ultralytics' Detect head replaces its anchors and strides whenever the batch size changes. A CUDA graph
    captured at another batch size reads the tensors that existed during its capture: unless the graph holds
    them, their memory goes back to the pool and is overwritten (garbage boxes at every batch size but the last
    captured, seen on an H200). ``module_tensors`` must find exactly what a forward replaces; the GPU itself is
    checked by yolo11-triton bench gpu (one request of 8 images against single requests)."""
    from pathlib import Path

    from python_models.runtime.network import forward_padded, load_network, module_tensors

    net = load_network(Path(__file__).parent / "assets" / "shapes_yolo11.pt", torch.device("cpu"))
    grey = torch.full((2, 640, 640, 3), 114, dtype=torch.uint8)
    forward_padded(net, grey, torch.device("cpu"))
    at_two = {id(t): t for t in module_tensors(net)}
    forward_padded(net, grey[:1], torch.device("cpu"))
    at_one = {id(t): t for t in module_tensors(net)}
    replaced = [t for key, t in at_two.items() if key not in at_one]
    assert replaced, "a forward at another batch size replaces some cached tensors (the premise)"
    head = net.model[-1]
    assert any(t is head.anchors for t in at_one.values()) and any(t is head.strides for t in at_one.values())
    assert {t.shape[-1] for t in replaced} == {head.anchors.shape[-1]}, "anchors and strides, one per anchor"


def test_weights_that_cannot_be_resolved_are_an_error_with_the_reason(tmp_path, monkeypatch):
    import pytest

    from python_models.export.weights import WeightsError, resolve_weights

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    cases = {
        str(tmp_path / "missing" / "best.pt"): "no such weights file",
        "yolo11q.pt": "neither a file nor a weights name",  # a typo: no such published name
        "yolo11s.pt": "cannot be downloaded",  # a real name, offline, not in the weights folder
    }
    for weights, reason in cases.items():
        with pytest.raises(WeightsError, match=reason):
            resolve_weights(weights, weights_dir=tmp_path)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not be loaded"):
        resolve_weights(str(broken))


def test_the_untrained_fallback_is_explicit_and_says_why(tmp_path, monkeypatch):
    from python_models.export.weights import resolve_weights

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    resolved = resolve_weights(str(tmp_path / "typo.pt"), allow_untrained=True)
    assert resolved.untrained and "no such weights file" in resolved.fallback_reason
    explicit = resolve_weights("yolo11n.yaml")
    assert explicit.untrained and explicit.fallback_reason is None, "a .yaml asks for the untrained network"


def test_a_name_is_found_in_the_weights_folder(tmp_path, monkeypatch):
    from python_models.export.weights import resolve_weights, untrained_detector

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    untrained_detector().save(str(tmp_path / "yolo11n.pt"))
    resolved = resolve_weights("yolo11n.pt", weights_dir=tmp_path)
    assert not resolved.untrained and resolved.source == str(tmp_path / "yolo11n.pt")
