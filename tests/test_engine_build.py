"""Plans are built by the image's trtexec, strongly typed from the graph of their precision, and a plan whose
TensorRT build differs from the server's (all four components) is refused, before it is put in place.

No TensorRT exists on any machine here, so trtexec is played by a script that writes a plan header as
TensorRT does (tag, serialisation 0, version bytes 24-27) and records how it was called.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from python_models import contract as c
from python_models.export import repository as repo
from python_models.export.engine_build import (
    EngineBuildError,
    build_engines,
    check_plan,
    engine_specs,
    plan_tensorrt_version,
)
from python_models.export.artifacts import EXPORT_COMPLETE, FP16_ONNX, end2end_onnx, raw_onnx, ultralytics_raw_onnx

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = "10.16.1.11"
SPEC = repo.default_spec()
ENGINES = sorted(n for n, d in repo.definitions_by_name(repo.default_spec()).items() if d.config.platform == "tensorrt_plan")


def plan_bytes(version: str) -> bytes:
    head = struct.pack("<II", 0x74727466, 0) + bytes(16) + bytes(int(p) for p in version.split("."))
    return head + b"engine"


@pytest.fixture
def fake_trtexec(tmp_path, monkeypatch) -> Path:
    script = tmp_path / "trtexec"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_TRTEXEC_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_TRTEXEC_FAIL"):
    print("[E] [TRT] ModelImporter.cpp: failed to parse", file=sys.stderr)
    sys.exit(1)
out = next(a.split("=", 1)[1] for a in args if a.startswith("--saveEngine="))
version = bytes(int(p) for p in os.environ["FAKE_TRT_VERSION"].split("."))
with open(out, "wb") as plan:
    plan.write((0x74727466).to_bytes(4, "little") + bytes(4) + bytes(16) + version + b"engine")
""")
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_TRTEXEC_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_TRT_VERSION", RUNTIME)
    return script


@pytest.fixture
def artifacts(tmp_path) -> Path:
    root = tmp_path / "repository"
    for path in (raw_onnx(root), end2end_onnx(root), ultralytics_raw_onnx(root)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"fp32 graph")
        path.with_name(FP16_ONNX).write_bytes(b"fp16 graph")
    return root


def calls(tmp_path) -> list[list[str]]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_every_plan_is_built_strongly_typed_from_the_fp16_graph_and_recorded(fake_trtexec, artifacts, tmp_path):
    assert build_engines(artifacts, SPEC, precision="fp16", trtexec=fake_trtexec, runtime=RUNTIME, log=lambda _: None) == []
    made = calls(tmp_path)
    assert len(made) == len(ENGINES)
    for spec in engine_specs(artifacts, SPEC, "fp16"):
        (args,) = [a for a in made if f"--saveEngine={spec.plan.with_name('model.plan.partial')}" in a]
        assert f"--onnx={spec.onnx}" in args and spec.onnx.name == FP16_ONNX
        assert "--stronglyTyped" in args and "--skipInference" in args
        batch = repo.definitions_by_name(repo.default_spec())[spec.model].config.max_batch_size
        # uint8 HWC for the engines the ensembles feed, float32 CHW for the one Ultralytics' client calls.
        dims = "3x{0}x{0}" if spec.model == repo.ULTRALYTICS_RAW_TRT else "{0}x{0}x3"
        image = f"{c.ONNX_INPUT}:{batch}x{dims.format(SPEC.imgsz)}"
        assert any(a.startswith("--maxShapes=") and image in a for a in args), args
        assert plan_tensorrt_version(spec.plan) == RUNTIME
        record = json.loads(spec.plan.with_name("model.json").read_text())
        assert record["tensorrt"] == RUNTIME and record["precision"] == "fp16" and record["onnx"] == FP16_ONNX
    # Up to date: nothing rebuilt. A changed graph or another precision: rebuilt.
    build_engines(artifacts, SPEC, precision="fp16", trtexec=fake_trtexec, runtime=RUNTIME, log=lambda _: None)
    assert len(calls(tmp_path)) == len(ENGINES)
    end2end_onnx(artifacts).with_name(FP16_ONNX).write_bytes(b"new fp16 graph")
    build_engines(artifacts, SPEC, precision="fp16", trtexec=fake_trtexec, runtime=RUNTIME, log=lambda _: None)
    assert len(calls(tmp_path)) == 2 * len(ENGINES) - 2  # every engine but the two raw ones comes from end2end
    build_engines(artifacts, SPEC, precision="fp32", trtexec=fake_trtexec, runtime=RUNTIME, log=lambda _: None)
    assert all(any(f"--onnx={graph(artifacts)}" in a for graph in (end2end_onnx, raw_onnx, ultralytics_raw_onnx))
               for a in calls(tmp_path)[-len(ENGINES):])


def test_a_plan_from_another_tensorrt_build_is_refused_and_not_put_in_place(fake_trtexec, artifacts, monkeypatch):
    monkeypatch.setenv("FAKE_TRT_VERSION", "10.16.1.10")  # same major.minor.patch, another build
    failed = build_engines(artifacts, SPEC, trtexec=fake_trtexec, runtime=RUNTIME, log=lambda _: None)
    assert len(failed) == len(ENGINES)
    assert all("built by TensorRT 10.16.1.10, but this server loads TensorRT 10.16.1.11" in f for f in failed)
    assert not any(s.plan.exists() or s.plan.with_name("model.plan.partial").exists() for s in engine_specs(artifacts, SPEC))


def test_a_failed_build_is_reported_with_trtexecs_words(fake_trtexec, artifacts, monkeypatch):
    monkeypatch.setenv("FAKE_TRTEXEC_FAIL", "1")
    failed = build_engines(artifacts, SPEC, [repo.END2END_TRT], trtexec=fake_trtexec, runtime=RUNTIME, log=lambda _: None)
    assert len(failed) == 1 and "trtexec exited with 1" in failed[0] and "failed to parse" in failed[0]


def test_no_builder_means_every_needed_plan_is_reported(artifacts, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    failed = build_engines(artifacts, SPEC, log=lambda _: None)
    assert len(failed) == len(ENGINES) and all("no TensorRT builder here" in f for f in failed)


def test_plan_headers_are_read_and_checked(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(plan_bytes("10.16.1.11"))
    assert plan_tensorrt_version(plan) == "10.16.1.11"
    check_plan(plan, "10.16.1.11")
    for other in ("10.16.1.10", "10.16.0.72", "11.0.0.114"):
        with pytest.raises(EngineBuildError, match="only loads on the build that made it"):
            check_plan(plan, other)
    with pytest.raises(EngineBuildError, match="cannot tell the exact TensorRT build"):
        check_plan(plan, None)
    plan.write_bytes(b"\x00" * 40)
    with pytest.raises(EngineBuildError, match="not a TensorRT plan"):
        plan_tensorrt_version(plan)


def test_export_for_the_gpu_profile_fails_here_naming_every_plan(server):
    """No TensorRT builder on this machine: the GPU-profile export must fail loudly, not print one line and exit 0,
    and leave no completion record a Kubernetes serving pod would take for a finished export."""
    complete = server.artifacts / EXPORT_COMPLETE
    complete.write_text("{}")  # as a previous export would have left it
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "export.py"), "--profile", "gpu", "--weights", "yolo11n.yaml",
         "--artifacts", str(server.artifacts)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 4, (result.returncode, result.stdout, result.stderr)
    for engine in ENGINES:
        assert f"NOT BUILT {engine}: no TensorRT builder here" in result.stderr, result.stderr
    # Track A's default on a GPU is the compiled network: it cannot be built here either, and says so.
    assert "NOT BUILT yolo11_pytorch model.inductor_cache: no GPU here" in result.stderr, result.stderr
    assert f"{len(ENGINES) + 1} plan(s) or package(s) the GPU profile needs were not built" in result.stderr
    assert not complete.exists(), "an export whose plans were not built is not complete"


def test_a_changed_max_batch_or_precision_rebuilds_what_it_changes(fake_trtexec, artifacts, tmp_path, monkeypatch):
    """The record beside each plan (precision, profiles, TensorRT, ONNX hash) decides, not file times."""
    build_engines(artifacts, SPEC, trtexec=fake_trtexec, runtime=RUNTIME, log=lambda _: None)
    built = len(calls(tmp_path))
    definitions = repo.model_definitions(repo.default_spec())
    wider = next(d for d in definitions if d.name == repo.END2END_TRT)
    wider.config.max_batch_size *= 2
    monkeypatch.setattr(repo, "model_definitions", lambda spec: definitions)
    build_engines(artifacts, SPEC, trtexec=fake_trtexec, runtime=RUNTIME, log=lambda _: None)
    rebuilt = calls(tmp_path)[built:]
    assert len(rebuilt) == 1 and any(a.startswith("--maxShapes=") and f"images:{wider.config.max_batch_size}x" in a
                                     for a in rebuilt[0])
    record = json.loads((artifacts / repo.END2END_TRT / "1" / "model.json").read_text())
    assert record["profiles"]["images"][2][0] == wider.config.max_batch_size
