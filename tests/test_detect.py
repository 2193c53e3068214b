"""yolo11-triton detect against the real server: every image exactly once, refusals recorded, full queues and a dead
server retried, interrupt and resume, COCO mAP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, SESSION, start_server, stop_server, tolerance
from ultralytics.utils import ASSETS

from python_models import contract as c
from python_models.client import infer_grpc, unpack_detections
from python_models.client.bulk import detections_of_line, read_jsonl
from python_models.client.matching import differences

DETECT = ["-m", "python_models", "detect"]
GOOD = 200
CORRUPT = {"text.jpg": b"this is not an image", "empty.png": b"", "truncated.jpg": None}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Crops and resizes of the sample photos, JPEG and PNG, in nested folders, and a few corrupt files."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    photos = [cv2.imread(str(ASSETS / name)) for name in ("bus.jpg", "zidane.jpg")]
    for index in range(GOOD):
        photo = photos[index % 2]
        h, w = photo.shape[:2]
        y0, x0 = int(rng.integers(0, h // 3)), int(rng.integers(0, w // 3))
        crop = photo[y0:y0 + int(rng.integers(h // 2, h - y0)), x0:x0 + int(rng.integers(w // 2, w - x0))]
        scale = float(rng.uniform(0.3, 1.0))
        image = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale))))
        target = root / f"set{index % 3}" / f"img{index:04d}.{'png' if index % 5 == 0 else 'jpg'}"
        target.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(target), image)
    (root / "bad").mkdir()
    for name, data in CORRUPT.items():
        (root / "bad" / name).write_bytes(data if data is not None else (ASSETS / "bus.jpg").read_bytes()[:5000])
    (root / "notes.txt").write_text("not an image suffix: not an input")
    return root


def inputs(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix in (".jpg", ".png"))


def detect(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *DETECT, *args, "--quiet"], capture_output=True, text=True, timeout=timeout)


def summary_of(result: subprocess.CompletedProcess) -> dict:
    (line,) = [l for l in result.stdout.splitlines() if l.startswith('{"summary"')]
    return json.loads(line)["summary"]


def by_image(out: Path) -> dict[str, dict]:
    lines = read_jsonl(out)
    keys = [line["image"] for line in lines]
    assert len(keys) == len(set(keys)), "an image was written twice"
    return {line["image"]: line for line in lines}


@pytest.fixture(scope="module")
def full_run(server, folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("detect") / "full.jsonl"
    result = detect(str(folder), "--model", c.TRT_ENSEMBLE, "--grpc-url", server.grpc_url, "--out", str(out),
                    "--concurrency", "8", "--images-per-request", "4")
    assert result.returncode == 1, result.stdout + result.stderr  # 1: the corrupt files were refused
    return out


def test_every_file_once_corrupt_ones_with_the_reason_and_detections_as_a_direct_request(server, folder, full_run):
    lines = by_image(full_run)
    assert sorted(lines) == inputs(folder), "every input exactly once, nothing else"
    errors = {Path(k).name: v["error"] for k, v in lines.items() if "error" in v}
    assert set(errors) == set(CORRUPT), errors
    assert "empty image" in errors["empty.png"] and "truncated" in errors["truncated.jpg"]
    assert "not a JPEG or PNG" in errors["text.jpg"] or "unsupported" in errors["text.jpg"].lower(), errors
    client = server.grpc()
    spec = SESSION["spec"]
    checked = 0
    for key in inputs(folder)[::8]:
        if "error" in lines[key]:
            continue
        (direct,) = unpack_detections(infer_grpc(client, c.TRT_ENSEMBLE, [Path(key).read_bytes()]), spec)
        got = detections_of_line(lines[key])
        assert not differences(got, direct, spec, *tolerance(c.TRT_ENSEMBLE)), key
        assert got.names == direct.names and (lines[key]["width"], lines[key]["height"]) == cv2.imread(key).shape[1::-1]
        checked += len(direct)
    assert checked > 20, "the comparison needs detections"


def test_interrupt_then_resume_equals_one_uninterrupted_run(server, folder, full_run, tmp_path):
    """Killed hard (SIGKILL: no cleanup at all) mid-run, then run again: only the rest is done, and the union is the
    uninterrupted run's answer. Both runs use two worker processes (the uninterrupted one, one); the workers of
    the killed run die with it."""
    import psutil

    out = tmp_path / "resumed.jsonl"
    command = [sys.executable, *DETECT, str(folder), "--model", c.TRT_ENSEMBLE, "--grpc-url", server.grpc_url, "--out",
               str(out), "--concurrency", "8", "--images-per-request", "4", "--processes", "2", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 40):
        time.sleep(0.05)
    workers = [w for w in psutil.Process(process.pid).children(recursive=True)
               if "spawn_main" in " ".join(w.cmdline())]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert len(workers) == 2, workers
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers outlived their parent: {alive}"
    first = out.read_bytes().count(b"\n")
    assert 40 <= first < len(inputs(folder)), first
    result = detect(str(folder), "--model", c.TRT_ENSEMBLE, "--grpc-url", server.grpc_url, "--out", str(out),
                    "--concurrency", "8", "--images-per-request", "4", "--processes", "2")
    summary = summary_of(result)
    assert summary["skipped"] == first and summary["images"] == len(inputs(folder)) - first, summary
    resumed, full = by_image(out), by_image(full_run)
    assert sorted(resumed) == sorted(full)
    spec = SESSION["spec"]
    for key, line in full.items():
        assert ("error" in line) == ("error" in resumed[key]), key
        if "error" not in line:
            assert not differences(detections_of_line(resumed[key]), detections_of_line(line), spec,
                                   *tolerance(c.TRT_ENSEMBLE)), key


def test_worker_processes_one_per_four_cores():
    from python_models.client.bulk_processes import default_processes

    assert [default_processes(n) for n in (1, 2, 4, 16, 32, 128)] == [1, 1, 1, 4, 8, 8]


def test_full_queues_are_retried_and_nothing_is_lost(server, folder, tmp_path):
    """yolo11_small_queue queues at most 2 requests of 1 image; 16 in flight get UNAVAILABLE again and again."""
    out = tmp_path / "small_queue.jsonl"
    result = detect(str(folder), "--model", "yolo11_small_queue", "--grpc-url", server.grpc_url, "--out", str(out),
                    "--concurrency", "16")
    summary = summary_of(result)
    assert summary["retries"] > 0, "the queue must have been full at times, or this proves nothing"
    lines = by_image(out)
    assert sorted(lines) == inputs(folder)
    assert {Path(k).name for k, v in lines.items() if "error" in v} == set(CORRUPT), "only the corrupt files fail"


SLOW_MS = 40
"""How long the second server's yolo11_instant takes per execution: the first answers at once."""


@pytest.fixture(scope="module")
def second(server, tmp_path_factory):
    """A second server on 127.0.0.2 with the session server's gRPC port, as two pods behind one DNS name; its
    yolo11_instant is slow. The last test of this module kills it."""
    port = int(server.grpc_url.rsplit(":", 1)[1])
    # The session server's export, served as a second pod serves the export its deployment shares.
    srv = start_server(tmp_path_factory.mktemp("second"), "yolo11n.yaml", "--models", c.PYTORCH, "--skip-export",
                       artifacts=server.artifacts, host="127.0.0.2", grpc_port=port,
                       extra_models=ROOT / "tests" / "models", env={"YOLO11_INSTANT_DELAY_MS": str(SLOW_MS)})
    yield srv
    if srv.process.poll() is None:
        stop_server(srv)


def test_a_name_resolving_to_two_servers_spreads_the_load_least_busy_first(server, second, tmp_path):
    """detect.py given one name that resolves to both addresses (a resolver stub stands in for DNS, as a headless
    Service answers) sends to both, and most to the one that answers faster: least busy, not round robin."""
    port = server.grpc_url.rsplit(":", 1)[1]
    stub = tmp_path / "resolver"
    stub.mkdir()
    (stub / "sitecustomize.py").write_text(
        "import socket\n"
        "_real = socket.getaddrinfo\n"
        "def getaddrinfo(host, port, *args, **kwargs):\n"
        "    if host == 'detect-pods.test':\n"
        "        return [(socket.AF_INET, socket.SOCK_STREAM, 6, '', (a, int(port))) for a in ('127.0.0.2', '127.0.0.1')]\n"
        "    return _real(host, port, *args, **kwargs)\n"
        "socket.getaddrinfo = getaddrinfo\n")
    photos = tmp_path / "small"
    photos.mkdir()
    crop = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(ASSETS / "bus.jpg")), (64, 80)))[1].tobytes()
    for index in range(600):
        (photos / f"{index:04d}.jpg").write_bytes(crop)
    out = tmp_path / "spread.jsonl"
    result = subprocess.run([sys.executable, *DETECT, str(photos), "--model", "yolo11_instant", "--grpc-url",
                             f"detect-pods.test:{port}", "--out", str(out), "--concurrency", "8", "--quiet"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(stub), os.environ.get("PYTHONPATH", "")])})
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(by_image(out)) == sorted(str(p) for p in photos.iterdir())
    by_server = summary_of(result)["by_server"]
    assert set(by_server) == {f"127.0.0.1:{port}", f"127.0.0.2:{port}"}, by_server
    fast, slow = by_server[f"127.0.0.1:{port}"], by_server[f"127.0.0.2:{port}"]
    # Round robin would split 300/300; the slow server holds each request SLOW_MS, so it is picked less.
    assert slow > 0 and fast > 2 * slow, by_server


def test_two_servers_one_killed_mid_run_every_image_answered_once(server, second, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "two.jsonl"
    command = [sys.executable, *DETECT, str(folder), "--model", c.PYTORCH, "--grpc-url", server.grpc_url,
               "--grpc-url", second.grpc_url, "--out", str(out), "--concurrency", "8", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 30):
        time.sleep(0.05)
    os.killpg(second.process.pid, signal.SIGKILL)  # the launcher, tritonserver and its stubs, at once
    stdout, stderr = process.communicate(timeout=600)
    summary = json.loads([line for line in stdout.splitlines() if line.startswith('{"summary"')][0])["summary"]
    lines = by_image(out)
    assert sorted(lines) == inputs(folder), stderr[-2000:]
    assert {Path(k).name for k, v in lines.items() if "error" in v} == set(CORRUPT), stderr[-2000:]
    assert summary["retries"] > 0, "requests in flight on the killed server were sent again"
    assert summary["by_server"].get(second.grpc_url, 0) > 0, summary["by_server"]


def _annotations_from(lines: dict[str, dict], names) -> dict:
    images, annotations = [], []
    for image_id, (key, line) in enumerate(sorted(lines.items()), start=1):
        if "error" in line:
            continue
        images.append({"id": image_id, "file_name": Path(key).name, "width": line["width"], "height": line["height"]})
        for det in line["detections"]:
            x1, y1, x2, y2 = det["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": det["class_id"],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": f"label{i}"} for i in range(len(names))]}


def test_coco_map_through_the_server(server, folder, tmp_path, reference_model):
    """Annotations made from the Ultralytics predictor's own detections: Track A scores about 1.0 against them,
    and a model that detects nothing scores 0."""
    from conftest import reference_detections

    spec = SESSION["spec"]
    sample = tmp_path / "sample"
    sample.mkdir()
    lines = {}
    for key in inputs(folder)[:40]:
        if Path(key).parent.name == "bad":
            continue
        target = sample / Path(key).name
        target.write_bytes(Path(key).read_bytes())
        ref = reference_detections(reference_model, str(target), spec)
        height, width = cv2.imread(str(target)).shape[:2]
        lines[str(target)] = {"image": str(target), "width": width, "height": height, "detections": [
            {"class_id": int(k), "box": [float(v) for v in b]} for b, k in zip(ref.boxes, ref.classes)]}
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps(_annotations_from(lines, spec.names)))
    scores = {}
    for model in (c.PYTORCH, "yolo11_instant"):
        result = detect(str(sample), "--model", model, "--grpc-url", server.grpc_url, "--out", str(tmp_path / f"{model}.jsonl"),
                        "--coco-annotations", str(annotations), "--coco-out", str(tmp_path / f"{model}.json"))
        assert result.returncode == 0, result.stdout + result.stderr
        (line,) = [l for l in result.stdout.splitlines() if l.startswith('{"coco"')]
        scores[model] = json.loads(line)["coco"]
        assert json.loads((tmp_path / f"{model}.json").read_text()) or model == "yolo11_instant"
    assert scores[c.PYTORCH]["AP"] > 0.95 and scores[c.PYTORCH]["AP50"] > 0.98, scores
    assert scores["yolo11_instant"]["AP"] == 0, scores


def test_a_video_is_detected_frame_by_frame(server, tmp_path):
    """Frames encoded to JPEG on the client, named by index; each answered as a direct request of that JPEG."""
    photo = cv2.imread(str(ASSETS / "zidane.jpg"))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, photo.shape[1::-1])
    for index in range(12):
        writer.write(np.roll(photo, index * 16, axis=1))
    writer.release()
    out = tmp_path / "video.jsonl"
    result = detect(str(video), "--model", c.PYTORCH, "--grpc-url", server.grpc_url, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = by_image(out)
    assert sorted(lines) == [f"{video}#frame={index:06d}" for index in range(12)]
    assert {(line["width"], line["height"]) for line in lines.values()} == {(1280, 720)}, lines
    assert sum(bool(line["detections"]) for line in lines.values()) >= 8, "most frames have detections"
    capture = cv2.VideoCapture(str(video))
    ok, frame = capture.read()
    capture.release()
    data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    (direct,) = unpack_detections(infer_grpc(server.grpc(), c.PYTORCH, [data]), SESSION["spec"])
    assert not differences(detections_of_line(lines[f"{video}#frame=000000"]), direct, SESSION["spec"],
                           *tolerance(c.PYTORCH))
