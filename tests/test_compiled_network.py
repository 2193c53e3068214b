"""Track A's compiled network (inductor caches built at export) on what a CPU can check: the build is refused here
with the reason, caches that are missing or were built for other weights, precision, size, batch, torch, GPU kind or
compile mode are refused at load naming the mismatch, and the CPU profile runs the network eagerly. The build
itself, its parity with the eager network and its speed are measured on the GPU host
(tools/gpu_benchmark.py --network compiled)."""

from __future__ import annotations

import json

import pytest
import torch

from python_models.build import repository as repo
from python_models.build.compiled_network import build_track_a
from python_models.runtime import network

TARGET = {"torch": torch.__version__, "capability": "9.0", "precision": "fp16", "image_size": 640,
          "fingerprint": "ab" * 32, "max_batch": 32, "mode": network.COMPILE_MODE}


def test_a_package_built_for_what_this_instance_runs_is_accepted():
    assert network.compiled_mismatches({**TARGET, "max_batch": 64}, TARGET) == []


@pytest.mark.parametrize("field,value,reason", [
    ("fingerprint", "cd" * 32, "fingerprint"),  # other weights
    ("precision", "fp32", "precision 'fp32'"),
    ("image_size", 1280, "image_size 1280"),
    ("torch", "2.9.0", "torch '2.9.0'"),
    ("capability", "8.0", "capability '8.0'"),  # built on an A100, served on an H100
    ("max_batch", 16, "max_batch 16, under the 32"),
    ("mode", "default", "mode 'default'"),
])
def test_a_package_built_for_something_else_is_refused_naming_it(field, value, reason):
    problems = network.compiled_mismatches({**TARGET, field: value}, TARGET)
    assert len(problems) == 1 and reason in problems[0], problems


def test_missing_caches_fail_the_instance_with_the_fix(tmp_path):
    with pytest.raises(network.CompiledNetworkError, match="model.inductor_cache .* is missing: build them on this host"):
        network.load_compiled(tmp_path, torch.nn.Identity(), torch.device("cpu"), True, 32, 640)
    (tmp_path / network.COMPILE_CACHE).write_bytes(b"caches")
    (tmp_path / network.COMPILED_RECORD).write_text(json.dumps({**TARGET}))
    with pytest.raises(Exception):  # no GPU to compare the record with: never a silent eager fallback
        network.load_compiled(tmp_path, torch.nn.Identity(), torch.device("cpu"), True, 32, 640)


def test_the_weights_fingerprint_changes_with_any_weight():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    before = network.network_fingerprint(net)
    assert network.network_fingerprint(net) == before
    with torch.no_grad():
        net[1].running_mean[2] += 1e-3
    assert network.network_fingerprint(net) != before
    assert network.network_fingerprint(net.half()) != network.network_fingerprint(net.float())


def test_the_build_is_refused_here_with_the_reason_and_the_cpu_profile_runs_eagerly(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the build runs (tools/gpu_benchmark.py measures it)")
    spec = repo.default_spec()
    (problem,) = build_track_a(tmp_path, spec)
    assert problem.startswith("yolo11_pytorch model.inductor_cache: no GPU here") and "docker compose run --rm export" in problem
    cpu = repo.cpu_profile_config(repo.definitions_by_name(spec)[repo.PYTORCH])
    assert cpu.parameters["network"].string_value == "eager"


def _head_output(shift: float = 0.0) -> torch.Tensor:
    """A head output with three confident boxes (centre-x, centre-y, w, h, 80 class scores per anchor)."""
    raw = torch.zeros((1, 84, 8400))
    for anchor, (cx, cy, cls) in enumerate([(100, 100, 0), (300, 200, 5), (500, 400, 9)]):
        raw[0, :4, anchor] = torch.tensor([cx + shift, cy, 80, 60])
        raw[0, 4 + cls, anchor] = 0.9
    return raw


def test_the_build_compares_the_compiled_networks_detections_with_the_eager_ones():
    from python_models.build.compiled_network import detection_differences

    assert detection_differences(_head_output(), _head_output(), 640, "fp16") == []
    assert detection_differences(_head_output(0.3), _head_output(), 640, "fp16") == [], "FP16 rounding is close enough"
    moved = detection_differences(_head_output(20.0), _head_output(), 640, "fp16")
    assert moved and "image 0" in moved[0], moved
    assert detection_differences(torch.zeros((1, 84, 8400)), torch.zeros((1, 84, 8400)), 640, "fp16") == [
        "the eager network detects nothing on the sample images: nothing was compared"]
    assert detection_differences(torch.zeros((2, 84, 8400)), _head_output(), 640, "fp16")[0].startswith("output (2,")
