"""yolo11-triton bench gpu: the pieces of the GPU scaling benchmark that can run without a GPU.

The benchmark itself runs on a GPU host (results/); here: the repository it serves (Track A on the first N
GPUs, an entry file that imports), the scaling arithmetic, the check of the stub's environment, and the CPU
side of the utilisation sampler.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from argparse import Namespace
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from python_models.export import repository as repo
from python_models.client.metrics import ModelMetrics
from python_models.client.perf_analyzer import PerfResult
from python_models.client.report import Run

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "assets" / "shapes_yolo11.pt"


@pytest.fixture(scope="module")
def bench():
    from python_models.cli import bench_gpu

    return bench_gpu


def _config(repository: Path) -> mc.ModelConfig:
    return text_format.Parse((repository / repo.PYTORCH / "config.pbtxt").read_text(), mc.ModelConfig())


def test_track_a_is_served_on_the_first_n_gpus_and_unchanged_without_a_count(bench, tmp_path):
    repository, untrained, _ = bench.layout(tmp_path / "two", str(WEIGHTS), "fp16", instances=4, gpus=2, network="eager")
    assert not untrained
    (group,) = _config(repository).instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_GPU and group.count == 4 and list(group.gpus) == [0, 1]
    two_gpu_queue = _config(repository).dynamic_batching.default_queue_policy.max_queue_size

    repository, _, _ = bench.layout(tmp_path / "all", str(WEIGHTS), "fp16", instances=4, network="eager")
    (group,) = _config(repository).instance_group
    assert group.count == 4 and not group.gpus, "the single-GPU configuration names no GPUs: every visible one"
    one_gpu_queue = _config(repository).dynamic_batching.default_queue_policy.max_queue_size
    assert one_gpu_queue == repo.pytorch_config(repo.default_spec(), mc.ModelInstanceGroup.KIND_GPU, 4, "fp16") \
        .dynamic_batching.default_queue_policy.max_queue_size, "unchanged from what the export writes"
    assert two_gpu_queue == 2 * one_gpu_queue, "twice the instances queue twice the requests"

    entry = (repository / repo.PYTORCH / "1" / "model.py").read_text()
    module = entry.split()[1]
    assert entry.startswith("from ") and importlib.util.find_spec(module) is not None, entry


def _run(concurrency: int, throughput: float) -> Run:
    perf = PerfResult(concurrency=concurrency, throughput=throughput, p50_ms=10, p90_ms=20, p95_ms=25, p99_ms=30,
                      server_queue_ms=1, server_compute_ms=5)
    metrics = ModelMetrics(requests=1, failures=0, inferences=16, executions=1, avg_batch=16.0, queue_ms=1,
                           compute_ms=5)
    return Run(repo.PYTORCH, perf, {repo.PYTORCH: metrics})


def _result(runs: list[Run], cores: int) -> dict:
    return {"runs": runs, "utilisation": {}, "detect": {}, "parity": {"passed": True},
            "meta": {"server_cores": cores, "load_s": 30.0}}


def test_scaling_efficiency_is_the_best_level_on_n_over_n_times_the_best_on_one(bench):
    rows, table = bench.scaling_table({
        1: _result([_run(64, 1000.0), _run(128, 1500.0)], 16),
        2: _result([_run(128, 2000.0), _run(256, 2700.0)], 32),
    })
    assert [r["images_per_s"] for r in rows] == [1500.0, 2700.0]
    assert [r["efficiency"] for r in rows] == [1.0, 0.9]
    assert [r["concurrency"] for r in rows] == [128, 256]
    assert "| 2 | 32 | 256 | 2,700 |" in table


def test_a_stub_environment_that_cannot_run_track_a_stops_the_benchmark_with_the_reason(bench, tmp_path):
    bench.check_stub_environment(Path(sys.executable).parent)  # the project's own environment can

    broken = tmp_path / "bin"
    broken.mkdir()
    python3 = broken / "python3"
    python3.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'cv2'\" >&2\nexit 1\n")
    python3.chmod(python3.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(SystemExit, match="No module named 'cv2'"):
        bench.check_stub_environment(broken)


def test_utilisation_reads_the_host_cpu_where_there_is_no_gpu(bench):
    with bench.Utilisation(every_s=0.05) as used:
        sum(i * i for i in range(2_000_000))
    assert 0 < used.result["host_cpu_busy_percent"] <= 100
    if not os.path.exists("/usr/bin/nvidia-smi"):
        assert used.result["gpu_util_percent"] == {}


def test_more_gpus_than_the_host_has_is_refused(bench, monkeypatch):
    import python_models.serving.triton as triton

    monkeypatch.setattr(triton, "gpu_count", lambda: 1)
    args = Namespace(gpus="1,2", cores_per_gpu=0)
    with pytest.raises(SystemExit, match="has 1 GPU"):
        bench.scaling(args, console=None, per_gpu_levels=[64])


def test_the_compiled_network_is_built_before_serving_and_refused_here_with_the_reason(bench, tmp_path):
    from python_models.export.compiled_network import CompiledNetworkBuildError

    with pytest.raises(CompiledNetworkBuildError, match="no GPU here"):
        bench.layout(tmp_path / "compiled", str(WEIGHTS), "fp16", instances=4, network="compiled")
    config = _config(tmp_path / "compiled" / "repository")
    assert config.parameters["network"].string_value == "compiled"
    assert config.parameters["decode"].string_value == repo.PYTORCH_DECODE == "gpu"


def test_the_before_server_changes_only_the_parameters_named_and_refuses_unknown_ones(bench):
    assert bench.before_settings("network=eager") == {"network": "eager"}
    assert bench.before_settings("nms=host, decode=cpu") == {"nms": "host", "decode": "cpu"}
    assert bench.before_settings("instances=4") == {"instances": 4}
    for wrong in ("network=fast", "precision=fp32", "eager", "", "instances=0", "instances=four"):
        with pytest.raises(SystemExit, match="--compare-before"):
            bench.before_settings(wrong)


def test_a_second_server_starts_from_the_first_ones_compiled_caches_and_never_overwrites_its_own(bench, tmp_path):
    from python_models.runtime.network import COMPILE_CACHE, COMPILED_RECORD

    first, second = tmp_path / "after", tmp_path / "before"
    second.mkdir()
    assert not bench.copy_compiled_caches(first, second), "nothing to copy from a folder with no build"
    (first / COMPILE_CACHE).mkdir(parents=True)
    (first / COMPILE_CACHE / "kernels.bin").write_bytes(b"autotuned")
    assert not bench.copy_compiled_caches(first, second), "caches without their record are not a build"
    (first / COMPILED_RECORD).write_text('{"fingerprint": "abc"}')
    assert bench.copy_compiled_caches(first, second)
    assert (second / COMPILE_CACHE / "kernels.bin").read_bytes() == b"autotuned"
    assert (second / COMPILED_RECORD).read_text() == '{"fingerprint": "abc"}'
    (first / COMPILED_RECORD).write_text('{"fingerprint": "other"}')
    assert not bench.copy_compiled_caches(first, second), "a folder's own build is kept"
    assert (second / COMPILED_RECORD).read_text() == '{"fingerprint": "abc"}'
    assert not bench.copy_compiled_caches(None, tmp_path / "third")


def test_the_profile_of_a_stage_names_the_python_and_the_torch_work_it_does(bench):
    import torch

    def stage():
        return sorted(range(2000), key=lambda k: -k), torch.ones(64, 64) @ torch.ones(64, 64)

    profiled = bench.where_time_goes(stage, calls=3)
    assert any("sorted" in line for line in profiled["python_by_own_time"]), profiled["python_by_own_time"]
    assert any("aten::mm" in line for line in profiled["torch_by_own_time"]), profiled["torch_by_own_time"]
    idle = bench.where_time_goes(lambda: sorted(range(10)), calls=3)
    assert not any("aten::mm" in line for line in idle["torch_by_own_time"]), "it names only what ran"


def test_the_benchmarks_letterbox_comparison_reads_a_faithful_decoder_as_close_and_a_wrong_one_as_far(bench):
    """What ``bench gpu`` reports as the GPU letterbox against the CPU one, run here with the stand-in nvJPEG of
    tests/test_gpu_decode.py: every photo, the phone photos included, within a grey level; swapped channels far."""
    import torch
    from test_gpu_decode import SIZE, StandInDecoder

    canvas = torch.zeros((1, SIZE, SIZE, 3), dtype=torch.uint8)
    close = bench.letterbox_vs_cpu(StandInDecoder(), canvas, SIZE)
    assert len(close) == 10 and "bus.jpg, EXIF orientation 6" in close
    assert all(figures["max_abs_diff"] <= 1 for figures in close.values()), close
    far = bench.letterbox_vs_cpu(StandInDecoder(channels_reversed=True), canvas, SIZE)
    assert all(figures["max_abs_diff"] > 50 for figures in far.values()), far
