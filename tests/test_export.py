"""The export writes what the server serves, and refuses, before any work and with the reason, what would be wrong:
weights that cannot be resolved, a repository it cannot write. It never installs anything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
import pytest
from conftest import git_status

from python_models import contract as c
from python_models.export import repository as repo
from python_models.export import repository_files
from python_models.export.artifacts import EXPORT_COMPLETE, ExportManifest, _up_to_date, raw_onnx, ultralytics_raw_onnx, read_manifest, weights_pt

ROOT = Path(__file__).resolve().parents[1]
EXPORT = str(ROOT / "tools" / "export.py")


def export(*args: str, user: int | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, EXPORT, *args], capture_output=True, text=True, timeout=600, user=user,
                          env={**os.environ, "YOLO_OFFLINE": "1", **(env or {})})


@pytest.mark.parametrize("graph,elem_type,channels_at", [(raw_onnx, onnx.TensorProto.UINT8, 3),
                                                        (ultralytics_raw_onnx, onnx.TensorProto.FLOAT, 1)])
def test_raw_onnx_has_dynamic_batch_and_the_contract_shapes(server, spec, graph, elem_type, channels_at):
    """Track B's graph reads uint8 RGB HWC; the one for Ultralytics' client, float32 CHW; both give the head."""
    model = onnx.load(str(graph(server.artifacts)))
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == c.ONNX_INPUT and out.name == c.ONNX_RAW_OUTPUT
    assert inp.type.tensor_type.elem_type == elem_type
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[channels_at] == 3, in_dims
    assert isinstance(out_dims[0], str) and out_dims[1] == 4 + spec.num_classes == 84, out_dims


@pytest.mark.parametrize("weights,reason", [
    ("/nonexistent/runs/best.pt", "no such weights file"),
    ("yolo11q.pt", "neither a file nor a weights name"),
    ("yolo11s.pt", "cannot be downloaded"),
])
def test_unresolvable_weights_fail_with_the_reason(tmp_path, weights, reason):
    result = export("--weights", weights, "--weights-dir", str(tmp_path / "weights"), "--artifacts", str(tmp_path / "repo"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert reason in result.stderr and "--allow-untrained" in result.stderr, result.stderr
    assert read_manifest(tmp_path / "repo") is None and not weights_pt(tmp_path / "repo").exists()


def checkout_copy(destination: Path) -> Path:
    """The working tree as a commit of it would hold it (tracked and not-ignored files), committed in a new repository
    at ``destination``: where running the tools can be watched with ``git status``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(["git", *command], cwd=destination, check=True, capture_output=True)
    return destination


def test_allow_untrained_serves_the_test_network_and_never_caches_it_as_the_weights_nor_touches_the_checkout(tmp_path):
    """Offline, as the README's first command runs here: the export (serve.py's first step, with the same default
    --artifacts) falls back to the untrained network and writes it into the ignored artifacts/ folder of the
    checkout: git status stays empty, the committed model_repository/ untouched."""
    checkout = checkout_copy(tmp_path / "checkout")
    result = subprocess.run([sys.executable, str(checkout / "tools" / "export.py"), "--weights", "/nonexistent/best.pt",
                             "--allow-untrained"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "YOLO_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "SERVING THE UNTRAINED TEST NETWORK" in result.stdout and "no such weights file" in result.stdout
    assert "no compiled network (Track A runs the network eagerly there)" in result.stdout, "skipped, in one line"
    repo_dir = checkout / "artifacts"
    manifest = read_manifest(repo_dir)
    assert manifest.untrained and "no such weights file" in manifest.fallback_reason
    assert git_status(checkout) == "", "the export wrote into the checkout's tracked files"
    # The check fires: the same export's configs written into the committed folder (the old default) show up.
    repository_files.write_repository(checkout / "model_repository", manifest.spec)
    assert "model_repository/" in git_status(checkout)
    outputs = [p for p in repo_dir.rglob("*") if p.suffix in (".pt", ".onnx")]
    assert not _up_to_date(manifest, manifest.weights_sha256, tuple(outputs)), "a stand-in must be re-resolved"
    requested = ExportManifest(**{**json.loads((repo_dir / "export.json").read_text()), "fallback_reason": None})
    assert _up_to_date(requested, requested.weights_sha256, tuple(outputs)), "the same record, resolved, is reused"
    assert json.loads((repo_dir / EXPORT_COMPLETE).read_text())["profile"] == "cpu", "what a serving pod waits for"


def _export_main_as(uid: int | None, args: list[str]) -> tuple[int, str]:
    """tools/export.py's main() in a forked child running as ``uid`` (None: as this user); (exit code, stderr).

    Forked rather than executed, because the interpreter lives under /root, which another user cannot enter:
    everything the refusal needs is imported before the fork.
    """
    from python_models.export import repository
    from python_models.cli import export as tool

    repository.model_definitions(repository.default_spec())  # imports what the refusal reads (ultralytics, for the warm-up image)
    err = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 70
        try:
            os.dup2(err.fileno(), 2)
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            sys.argv = [EXPORT, *args]
            sys.stderr = os.fdopen(2, "w", buffering=1)
            code = tool.main()
        except BaseException as exc:  # noqa: BLE001 - reported through the exit code and stderr
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    err.seek(0)
    return os.waitstatus_to_exitcode(status), err.read().decode()


def test_an_unwritable_repository_is_refused_before_any_work():
    base = Path(tempfile.mkdtemp(prefix="yolo11-unwritable-"))  # not under pytest's private tmp: others can enter
    try:
        base.chmod(0o755)
        repo_dir = base / "repo"
        (repo_dir / "yolo11_pytorch" / "1").mkdir(parents=True)
        if os.getuid() != 0:
            repo_dir.chmod(0o555)
        # As root (who writes anywhere) the export runs as nobody, the way a wrong UID in .env would.
        start = time.monotonic()
        code, stderr = _export_main_as(65534 if os.getuid() == 0 else None,
                                       ["--weights", "yolo11n.yaml", "--artifacts", str(repo_dir)])
        assert code == 3, stderr
        assert "cannot write" in stderr and "YOLO11_UID" in stderr and str(repo_dir) in stderr, stderr
        # The fix for NFS-backed ReadWriteMany volumes, which ignore the pod's fsGroup, with this process's ids.
        ids = "65534:65534" if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
        assert "fsGroup" in stderr and "fsGroupPolicy: File" in stderr and "initContainer" in stderr, stderr
        assert f"chown -R {ids}" in stderr and f"anonuid={ids.split(':')[0]}" in stderr, stderr
        assert time.monotonic() - start < 30 and not (repo_dir / "export.json").exists(), "refused before any work"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_export_never_installs_anything(server):
    log = server.log.read_text(errors="replace")
    assert "AutoUpdate" not in log and "pip install" not in log, "Ultralytics tried to install a package"
    for command in ("export.py", "serve.py"):
        assert 'os.environ.setdefault("YOLO_AUTOINSTALL", "false")' in (ROOT / "python_models" / "cli" / command).read_text()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("weights,reason", [
    ("yolo11n-seg.yaml", "a 'segment' model (Segment head) cannot be served"),
    ("yolo11n-pose.yaml", "a 'pose' model (Pose head) cannot be served"),
    ("yolov10n.yaml", "v10Detect head is NMS-free end-to-end"),
    ("yolo26n.yaml", "Detect head is NMS-free end-to-end"),
])
def test_models_no_track_can_serve_are_refused_saying_what_can(tmp_path, weights, reason):
    result = export("--weights", weights, "--artifacts", str(tmp_path / "repo"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert reason in result.stderr and "anchor-free YOLOv8/YOLO11 head" in result.stderr, result.stderr
    assert "--allow-untrained" not in result.stderr, "no stand-in can make such a model servable"
    assert not (tmp_path / "repo").exists() or not _files(tmp_path / "repo"), "nothing may be written"


def test_an_image_size_that_is_not_a_multiple_of_the_stride_is_refused(tmp_path):
    result = export("--weights", "yolo11n.yaml", "--imgsz", "300", "--artifacts", str(tmp_path / "repo"))
    assert result.returncode == 2 and "multiple of the largest stride 32" in result.stderr, result.stderr


def test_a_refused_or_failed_export_leaves_the_previous_one_as_it_was(tmp_path, monkeypatch):
    """Nothing half-written: the artifacts, the configs and the manifest of the last good export stay, byte for
    byte, when the next export is refused (a segmentation model) or fails half-way (after the ONNX export)."""
    from python_models.export import end2end
    from python_models.export.artifacts import ExportOptions, export_artifacts
    from python_models.export.weights import UnservableModel

    network = tmp_path / "three.yaml"
    network.write_text((Path(__import__("ultralytics").__file__).parent / "cfg" / "models" / "11" / "yolo11.yaml")
                       .read_text().replace("nc: 80", "nc: 3\nnames: [helmet, vest, plate]"))
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    (repo_dir / EXPORT_COMPLETE).write_text("{}")  # left by an earlier export whose artifacts this one replaces
    first = export_artifacts(str(network), repo_dir, options=ExportOptions(imgsz=160))
    assert first.spec.names == ("helmet", "vest", "plate") and first.spec.imgsz == 160
    assert not (repo_dir / EXPORT_COMPLETE).exists(), "replaced artifacts are not complete until their plans are built"
    before = _files(repo_dir)
    assert any(name.endswith("model.onnx") for name in before) and "export.json" in before
    with pytest.raises(UnservableModel):
        export_artifacts("yolo11n-seg.yaml", repo_dir)
    assert _files(repo_dir) == before

    def broken(*args, **kwargs):
        raise RuntimeError("planted failure after the ONNX export")

    monkeypatch.setattr(end2end, "end2end_graph", broken)
    with pytest.raises(RuntimeError, match="planted failure"):
        export_artifacts(str(network), repo_dir, options=ExportOptions(imgsz=224))
    assert _files(repo_dir) == before, "a failed export must not leave new files beside old ones"


def test_export_options_come_from_the_flags_or_from_docker_compose(monkeypatch):
    """docker compose passes IMGSZ, CONF, IOU, MAX_DET as YOLO11_* (empty when unset): empty means the default."""
    import argparse

    import yaml

    from python_models.export.artifacts import ExportOptions

    def parsed(*argv: str) -> ExportOptions:
        parser = argparse.ArgumentParser()
        ExportOptions.add_arguments(parser)
        return ExportOptions.from_args(parser.parse_args(argv))

    variables = ("YOLO11_IMGSZ", "YOLO11_CONF", "YOLO11_IOU", "YOLO11_MAX_DET", "YOLO11_TRACK_A_DECODE",
                 "YOLO11_TRACK_A_NETWORK", "YOLO11_PREPROCESS_DECODE", "YOLO11_TRACK_DETECTOR", "YOLO11_TRACKER",
                 "YOLO11_TRACK_IDLE_S", "YOLO11_GPUS")
    for variable in variables:
        monkeypatch.setenv(variable, "")
    assert parsed() == ExportOptions()
    monkeypatch.setenv("YOLO11_IMGSZ", "1280")
    monkeypatch.setenv("YOLO11_MAX_DET", "300")
    assert parsed() == ExportOptions(imgsz=1280, max_det=300)
    assert parsed("--imgsz", "320") == ExportOptions(imgsz=320, max_det=300), "a flag wins"
    monkeypatch.setenv("YOLO11_TRACK_A_NETWORK", "eager")
    assert parsed("--track-a-decode", "cpu").track_a == repo.TrackAOptions(decode="cpu", network="eager")
    with pytest.raises(SystemExit):
        parsed("--track-a-network", "aot")
    assert parsed().preprocess_decode == "gpu", "tracks B/C decode on the GPU of a GPU host unless told"
    monkeypatch.setenv("YOLO11_PREPROCESS_DECODE", "cpu")
    assert parsed().preprocess_decode == "cpu"
    with pytest.raises(SystemExit):
        parsed("--preprocess-decode", "dali")
    assert parsed().tracking == repo.TrackingOptions("auto", "bytetrack", 10.0)
    monkeypatch.setenv("YOLO11_TRACK_DETECTOR", repo.PYTORCH)
    monkeypatch.setenv("YOLO11_TRACK_IDLE_S", "2.5")
    assert parsed("--tracker", "botsort").tracking == repo.TrackingOptions(repo.PYTORCH, "botsort", 2.5)
    for wrong in (("--track-detector", "yolo11_track"), ("--tracker", "sort")):
        with pytest.raises(SystemExit):
            parsed(*wrong)
    with pytest.raises(ValueError, match="positive"):
        parsed("--track-idle-s", "0")
    assert parsed().gpus == 1, "the GPUs this host has: none here, so one"
    monkeypatch.setenv("YOLO11_GPUS", "4")
    assert parsed().gpus == 4 and parsed("--gpus", "2").gpus == 2
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["export"]["environment"]
    assert {k: environment[k] for k in variables} == {k: "${" + k.removeprefix("YOLO11_") + ":-}" for k in variables}


def test_the_manifest_records_track_a_as_the_configs_were_written():
    """tools/serve.py --skip-export checks the repository against the manifest: Track A's choices must be in it, and
    a manifest from before they were (no field) means the defaults."""
    from dataclasses import asdict

    written = ExportManifest(weights="w.pt", weights_sha256="k", metadata="{}", untrained=False,
                             track_a=asdict(repo.TrackAOptions(decode="cpu", network="eager")))
    assert ExportManifest(**json.loads(json.dumps(asdict(written)))).track_a_options == repo.TrackAOptions("cpu", "eager")
    assert ExportManifest(weights="w.pt", weights_sha256="k", metadata="{}", untrained=False).track_a_options == \
        repo.TrackAOptions() == repo.TrackAOptions(decode="gpu", network="compiled")
    with pytest.raises(ValueError, match="and network one of"):
        repo.TrackAOptions(network="aot")
    cpu_step = ExportManifest(weights="w.pt", weights_sha256="k", metadata="{}", untrained=False, preprocess_decode="cpu")
    assert ExportManifest(**json.loads(json.dumps(asdict(cpu_step)))).preprocess_decode == "cpu"
