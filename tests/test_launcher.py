"""The launcher and the self-check against real servers: a model that fails to load is named and leaves the others
serving; tools/check_server.py passes a sound server and fails a broken one, naming the model; shutdown stops the
stub supervisor before the server, so stubs exiting on SIGTERM are not taken for crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import SERVER_START_TIMEOUT_S, Server, free_port

from python_models import contract as c
from python_models.export import repository as repo
from python_models.client import infer_grpc, unpack_detections
from python_models.serving.status import wait_ready
from python_models.serving.twins import FAIL_LOAD_ENV

ROOT = Path(__file__).resolve().parents[1]
FAILING = "yolo11_fails_to_load"
DALI_TIER = c.dali_ensemble_name(c.DALI_TIERS[0])
DALI_GUARD = c.dali_guard_name(c.DALI_TIERS[0])
DALI_LEAF = c.dali_preprocess_name(c.DALI_TIERS[0])


def check_server(server: Server, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check_server.py"), "--grpc-url", server.grpc_url,
         "--http-url", server.http_url, "--metrics-url", server.metrics_url.removesuffix("/metrics"),
         "--weights", str(server.artifacts / repo.PYTORCH / "1" / "model.pt"), "--out", str(out), *args],
        capture_output=True, text=True, timeout=1200)


def test_check_server_passes_against_the_cpu_profile_with_its_defaults(server, tmp_path):
    """No option but where the server and its weights are: on this slow host too, perf_analyzer's windows are sized
    from a request's latency, and a level too slow to measure in the budget is reported as such, not failed."""
    result = check_server(server, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["passed"] and (tmp_path / "check.md").read_text().startswith("# Server check: PASSED")
    seen = {(f["model"], f["check"]) for f in report["findings"]}
    for model in repo.PUBLIC_MODELS:
        for check in ("ready", "contract_io", "contract", "bad_input", "batch_mates", "still_ready", "batching", "perf"):
            assert (model, check) in seen, (model, check)
        if model != repo.PYTORCH:
            assert (model, "same_as_track_a") in seen
    assert (repo.PYTORCH, "same_as_predictor") in seen
    assert {r["model"] for r in report["perf"]} == set(repo.PUBLIC_MODELS)
    assert "THE UNTRAINED TEST NETWORK" in report["meta"]["weights"]
    # Phone photos in every orientation went through every comparison, and the damaged scans through the bad inputs.
    images = {f["image"] for f in report["findings"] if f["check"] == "same_as_track_a"}
    assert {f"bus_exif_{k}.jpg" for k in range(1, 9)} <= images, images
    bad = {f["image"] for f in report["findings"] if f["check"] == "bad_input"}
    assert {"scan_header_7_components", "frame_undefined_quantisation_table",
            "png_pixel_data_damaged_crcs_intact"} <= bad, bad
    # Track D decoded every good image with DALI, and the tracking model kept IDs and refused lost streams.
    for tier_model in (m for m in repo.PUBLIC_MODELS if m.startswith("yolo11_dali_")):
        assert (tier_model, "dali_decoded") in seen, tier_model
    tracked = [f for f in report["findings"] if f["model"] == c.TRACK]
    assert {f["check"] for f in tracked} == {"ready", "contract_io", "tracking"}, tracked
    assert {f["image"] for f in tracked if f["check"] == "tracking"} >= {"a frame of a stream never started",
                                                                         "a frame of a stream ended"}, tracked


def test_check_server_names_a_tracker_that_forgets_its_streams(server, tmp_path):
    """tests/models/yolo11_track_forgetful: the real tracking model, except that every frame starts its stream
    afresh. IDs then restart on every frame, and the self-check must fail on it, naming the object that changed ID."""
    result = check_server(server, tmp_path, "--models", f"{repo.PYTORCH},yolo11_track_forgetful", "--skip-perf")
    assert result.returncode == 1, result.stdout[-3000:]
    findings = json.loads((tmp_path / "check.json").read_text())["findings"]
    tracking = [f for f in findings if f["check"] == "tracking" and f["model"] == "yolo11_track_forgetful"]
    failed = [f for f in tracking if not f["passed"]]
    assert failed and all("on frame 1 has ID" in f["detail"] for f in failed), tracking
    # Triton itself still refuses frames of streams never started or ended: those rows pass
    assert [f["image"] for f in tracking if f["passed"]] == ["a frame of a stream never started",
                                                               "a frame of a stream ended"], tracking


def test_check_server_fails_on_a_wrong_model_and_names_it(server, tmp_path):
    result = check_server(server, tmp_path, "--models", f"{repo.PYTORCH},yolo11_wrong_shapes", "--skip-perf")
    assert result.returncode == 1, result.stdout[-3000:]
    failed = [f for f in json.loads((tmp_path / "check.json").read_text())["findings"] if not f["passed"]]
    assert failed and {f["model"] for f in failed} == {"yolo11_wrong_shapes"}, failed
    assert "contract_io yolo11_wrong_shapes" in result.stdout and "detection_boxes" in result.stdout


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory):
    """tools/serve.py as the README's first command runs it (no --weights, offline here), serving Track A beside a
    model whose initialize raises, and Track D's streaming tier whose DALI leaf fails to load."""
    work = tmp_path_factory.mktemp("failing")
    ports = [free_port() for _ in range(3)]
    srv = Server(*ports, artifacts=work / "artifacts", log=work / "server.log")
    cmd = [sys.executable, str(ROOT / "tools" / "serve.py"), "--models", f"{repo.PYTORCH},{DALI_TIER}",
           "--weights-dir", str(work / "weights"),
           "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
           "--artifacts", str(srv.artifacts), "--work-dir", str(work / "work"),
           "--extra-models", str(ROOT / "tests" / "models_failing")]
    with open(srv.log, "wb") as sink:
        process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, FAIL_LOAD_ENV: DALI_LEAF})
    srv.process = process
    # The self-check started with the server, as `docker compose up -d; docker compose run --rm check` does.
    srv.early_check = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "check_server.py"), "--grpc-url", srv.grpc_url, "--http-url", srv.http_url,
         "--metrics-url", srv.metrics_url.removesuffix("/metrics"), "--models", repo.PYTORCH, "--skip-perf",
         "--weights", str(srv.artifacts / repo.PYTORCH / "1" / "model.pt"), "--out", str(work / "early_check")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait_ready(f"http://{srv.http_url}/v2/health/live", process, SERVER_START_TIMEOUT_S):
        process.kill()
        pytest.fail(f"the server with a failing model never came up:\n{srv.log_tail()}")
    deadline = time.monotonic() + 120
    while "serving 1 of 3 public models" not in srv.log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(1)
    yield srv
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)


def test_the_default_weights_offline_come_up_untrained_with_the_reason(failing_server):
    log = failing_server.log.read_text(errors="replace")
    assert "SERVING THE UNTRAINED TEST NETWORK: weights 'yolo11n.pt' could not be used" in log
    assert "YOLO_OFFLINE is set" in log, "the banner must say why"


def test_a_model_that_fails_to_load_is_named_and_the_others_serve(failing_server, samples):
    log = failing_server.log.read_text(errors="replace")
    assert "serving 1 of 3 public models: yolo11_pytorch" in log, failing_server.log_tail()
    assert f"NOT SERVING {FAILING}: UNAVAILABLE" in log and "deliberately failing to load" in log
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://{failing_server.http_url}/v2/health/ready", timeout=10)
    assert err.value.code in (400, 503), "ready must say that not every model is serving"
    client = failing_server.grpc()
    assert client.is_model_ready(repo.PYTORCH) and not client.is_model_ready(FAILING)
    assert len(unpack_detections(infer_grpc(client, repo.PYTORCH, [samples["bus.jpg"]]))[0]) > 0


def test_a_dali_leaf_that_failed_to_load_is_named_everywhere_and_never_worked_around(failing_server, samples,
                                                                                      tmp_path):
    """The guard calls its leaf through BLS, which Triton does not count as a dependency: the tier's ensemble loaded
    READY over a leaf that did not, and the guard decoded every request on the CPU, unseen. Now the launcher names
    the leaf and unloads the tier (its readiness, which the Kubernetes probe reads, says so), the guard refuses with
    UNAVAILABLE naming the leaf instead of decoding on the CPU, its gauge says 0, and the self-check names the leaf."""
    from python_models.client.metrics import scrape
    from tritonclient.utils import InferenceServerException

    log = failing_server.log.read_text(errors="replace")
    assert f"NOT SERVING {DALI_TIER}: READY (because {DALI_LEAF}: UNAVAILABLE" in log, failing_server.log_tail()
    assert f"unloaded {DALI_TIER}: a model behind it is not ready" in log
    client = failing_server.grpc()
    assert not client.is_model_ready(DALI_TIER)
    with urllib.request.urlopen(f"http://{failing_server.http_url}/v2/models/{DALI_GUARD}/ready", timeout=10):
        pass  # the guard stays loaded: its gauge is what names the leaf
    before = scrape(failing_server.metrics_url, [c.DALI_CPU_FALLBACK_METRIC, c.DALI_LEAF_READY_METRIC])
    with pytest.raises(InferenceServerException) as refused:
        infer_grpc(client, DALI_GUARD, [samples["bus.jpg"]], outputs=[c.LETTERBOX_TRANSFORM])
    assert refused.value.status() == "StatusCode.UNAVAILABLE" and DALI_LEAF in refused.value.message()
    after = scrape(failing_server.metrics_url, [c.DALI_CPU_FALLBACK_METRIC, c.DALI_LEAF_READY_METRIC])
    assert after[(c.DALI_LEAF_READY_METRIC, DALI_GUARD)] == 0
    fallback = (c.DALI_CPU_FALLBACK_METRIC, DALI_GUARD)
    assert after.get(fallback, 0) == before.get(fallback, 0), "nothing may be decoded on the CPU instead"
    result = check_server(failing_server, tmp_path, "--models", f"{repo.PYTORCH},{DALI_TIER}", "--skip-perf")
    assert result.returncode == 1
    failed = [f for f in json.loads((tmp_path / "check.json").read_text())["findings"] if not f["passed"]]
    assert [(f["check"], f["model"]) for f in failed] == [("ready", DALI_TIER)], failed
    assert f"its DALI leaf {DALI_LEAF} is not loaded" in failed[0]["detail"], failed


def test_check_server_started_with_the_server_waits_for_it_and_passes(failing_server):
    output, _ = failing_server.early_check.communicate(timeout=900)
    assert failing_server.early_check.returncode == 0, output[-3000:]
    assert "waiting for the server" in output and "to finish loading its models" in output, output[:2000]
    assert "the server answers after" in output


def test_check_server_fails_on_a_model_that_did_not_load_and_names_it(failing_server, tmp_path):
    result = check_server(failing_server, tmp_path, "--models", f"{repo.PYTORCH},{FAILING}", "--skip-perf")
    assert result.returncode == 1
    failed = [f for f in json.loads((tmp_path / "check.json").read_text())["findings"] if not f["passed"]]
    assert [(f["check"], f["model"]) for f in failed] == [("ready", FAILING)], failed


def test_shutdown_stops_the_supervisor_before_the_server(failing_server):
    """Stubs exit when Triton shuts down; a supervisor still watching would reload models during the shutdown."""
    before = len(failing_server.log.read_text(errors="replace"))
    failing_server.process.send_signal(signal.SIGTERM)
    assert failing_server.process.wait(timeout=120) == 0
    after = failing_server.log.read_text(errors="replace")[before:]
    assert "supervisor:" not in after, after[-2000:]


def test_the_gpu_profile_refuses_a_repository_sized_for_another_gpu_count(tmp_path, monkeypatch, capsys):
    """export --gpus sized the queue bounds for the serving host's GPUs: serving them on a host with another count
    stops with the count to export for; on the count it was sized for, that check passes (and the next one, the
    stale-file check, speaks instead)."""
    from dataclasses import asdict

    from python_models.cli import serve
    from python_models.export.artifacts import MANIFEST, ExportManifest

    manifest = ExportManifest(weights="w.pt", weights_sha256="k", metadata=repo.default_spec().metadata(),
                              untrained=False, gpus=1)
    (tmp_path / MANIFEST).write_text(json.dumps(asdict(manifest)))
    argv = ["--profile", "gpu", "--skip-export", "--artifacts", str(tmp_path)]
    monkeypatch.setattr(serve, "gpu_count", lambda: 2)
    assert serve.main(argv) == 2
    assert "sized the repository for 1 GPU(s) and this host has 2" in capsys.readouterr().err
    monkeypatch.setattr(serve, "gpu_count", lambda: 1)
    assert serve.main(argv) == 2
    err = capsys.readouterr().err
    assert "GPU(s)" not in err and "differ from what the export" in err
