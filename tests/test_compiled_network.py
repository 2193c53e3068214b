"""Track A's compiled network (inductor caches built at export) on what a CPU can check: the build is refused here
with the reason, caches that are missing or were built for other weights, precision, size, batch, torch, GPU kind or
compile mode are refused at load naming the mismatch, and the CPU profile runs the network eagerly. The build
itself, its parity with the eager network and its speed are measured on the GPU host
(yolo11-triton bench gpu --network compiled)."""

from __future__ import annotations

import json
import sysconfig

import pytest
import torch

from python_models.export import repository as repo
from python_models.export import cpu_configs
from python_models.export import repository_files
from python_models.export.compiled_network import build_track_a, jit_toolchain_problem
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


def test_the_build_follows_the_config_the_export_wrote_and_is_refused_here_with_the_reason(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the build runs (yolo11-triton bench gpu measures it)")
    spec = repo.default_spec()
    (problem,) = build_track_a(tmp_path, spec)
    assert problem.startswith("yolo11_pytorch: no ") and "run yolo11-triton export" in problem
    repository_files.write_repository(tmp_path, spec, track_a=repo.TrackAOptions(network="eager"))  # --track-a-network eager
    assert build_track_a(tmp_path, spec) == [], "an eager Track A has nothing to build"
    assert repository_files.write_repository(tmp_path, spec, check=True) == [tmp_path / repo.PYTORCH / "config.pbtxt"], \
        "the default config differs from the eager one in Track A's only"
    repository_files.write_repository(tmp_path, spec)  # the default: compiled
    (problem,) = build_track_a(tmp_path, spec)
    assert problem.startswith("yolo11_pytorch model.inductor_cache: no GPU here") and "--track-a-network eager" in problem
    cpu = cpu_configs.cpu_profile_config(repo.definitions_by_name(spec)[repo.PYTORCH])
    assert cpu.parameters["network"].string_value == "eager"


def test_the_toolchain_check_builds_an_extension_as_triton_does_and_names_what_is_missing(tmp_path, monkeypatch):
    """The compiled network's Triton kernels need a C compiler and the Python headers in every process that loads
    them; the image check and the export refuse, with the reason, an environment without them."""
    monkeypatch.delenv("CC", raising=False)
    assert jit_toolchain_problem() is None, "this machine has gcc and the headers"
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert "cannot run" in jit_toolchain_problem()
    monkeypatch.setenv("CC", "/bin/false")
    assert "could not build a Python extension" in jit_toolchain_problem()
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert jit_toolchain_problem().startswith("no C compiler")
    monkeypatch.undo()
    monkeypatch.setattr(sysconfig, "get_paths", lambda scheme=None: {"include": str(tmp_path)})
    assert jit_toolchain_problem().startswith(f"no Python.h in {tmp_path}")


def _head_output(shift: float = 0.0) -> torch.Tensor:
    """A head output with three confident boxes (centre-x, centre-y, w, h, 80 class scores per anchor)."""
    raw = torch.zeros((1, 84, 8400))
    for anchor, (cx, cy, cls) in enumerate([(100, 100, 0), (300, 200, 5), (500, 400, 9)]):
        raw[0, :4, anchor] = torch.tensor([cx + shift, cy, 80, 60])
        raw[0, 4 + cls, anchor] = 0.9
    return raw


def test_the_build_compares_the_compiled_head_output_with_the_eager_one():
    from python_models.export.compiled_network import head_differences

    assert head_differences(_head_output(), _head_output()) == []
    assert head_differences(_head_output(0.75), _head_output()) == [], "FP16 rounding near 600 px is close enough"
    assert head_differences(_head_output(20.0), _head_output())[0].startswith("boxes")
    wrong_scores = _head_output()
    wrong_scores[0, 4:, :3] += 0.1
    assert head_differences(wrong_scores, _head_output()) == ["class scores up to 0.1 apart"]
    assert head_differences(torch.zeros((2, 84, 8400)), _head_output())[0].startswith("output (2,")


def test_the_compiled_graph_holds_no_device_to_host_read_so_cuda_graphs_can_replay_it():
    """The head's anchors are constants of the exported graph; built in the graph, they read the strides with
    ``.item()``, which synchronises every call and broke CUDA graph capture of the compiled network on the H100."""
    from conftest import ROOT

    net = network.load_network(ROOT / "tests" / "assets" / "shapes_yolo11.pt", torch.device("cpu"))

    def reads(program) -> set[str]:
        return {str(n.target) for n in program.graph.nodes if n.op == "call_function" and "aten.item" in str(n.target)}

    assert reads(network.exported_network(net, False, 2, 320, torch.device("cpu"))) == set()
    fresh = network.load_network(ROOT / "tests" / "assets" / "shapes_yolo11.pt", torch.device("cpu"))
    assert reads(network.exported_network(fresh, False, 2, 320, torch.device("cpu"), warm=False)), "the check fires"
