"""Serving your own detector: any class count, any input size, your thresholds, class names in every answer.

The trained test detector (tests/assets/shapes_yolo11.pt, yolo11-triton dev train-shapes) on its own real server,
started as a user starts it with tools/serve.py: three classes with their own names at --imgsz 320, with ground
truth, so accuracy is measured, not assumed. (Another head with other thresholds: test_own_thresholds.py.)

The same server tracks it in video (``yolo11_track``, a 2 s idle timeout given at export): moving-shapes videos with
ground-truth identities get ``model.track``'s IDs, its MOTA and IDF1; streams sent at once do not mix; an idle
stream is freed; a killed stub costs its streams one restart.
"""

from __future__ import annotations


import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from conftest import ROOT, assert_same_detections, measured, reference_detections, start_server, stop_server, tolerance
from tritonclient.utils import InferenceServerException

from python_models import contract as c
from python_models.export import shapes_dataset as shapes
from python_models.client import contract_violations, infer_grpc, served_spec, unpack_detections
from python_models.client.bulk import VIDEO_JPEG_QUALITY
from python_models.client.evaluation import GroundTruth, coco_map
from python_models.client.matching import Detections, box_iou
from python_models.client.metrics import scrape
from python_models.client.streams import frame_track_ids, send_frame
from python_models.serving.supervisor import python_stubs

SHAPES_WEIGHTS = ROOT / "tests" / "assets" / "shapes_yolo11.pt"
HELD_OUT = 80
"""Held-out synthetic images the mAP is measured on (never trained or validated on)."""
MAP_TOLERANCE = 0.01
MIN_MAP = 0.6
"""What the trained detector must reach on the held-out set, by the Ultralytics predictor: a real detector."""
SERVED_MODELS = (*c.PUBLIC_MODELS, c.ULTRALYTICS_RAW_TRT)


TRACK_IDLE_S = 2.0


@pytest.fixture(scope="module")
def shapes_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("shapes"), str(SHAPES_WEIGHTS), "--imgsz", str(shapes.IMAGE_SIZE),
                       "--track-idle-s", str(TRACK_IDLE_S))
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def held_out() -> list:
    return shapes.test_set(HELD_OUT)


@pytest.fixture(scope="module")
def shapes_predictor():
    from ultralytics import YOLO

    return YOLO(str(SHAPES_WEIGHTS))


def test_every_public_model_and_the_raw_leaf_state_the_detectors_names_size_and_thresholds(shapes_server):
    client = shapes_server.grpc()
    for model in SERVED_MODELS:
        spec = served_spec(client, model)
        assert spec.names == shapes.NAMES and spec.imgsz == shapes.IMAGE_SIZE, model
        assert (spec.conf, spec.iou, spec.max_det) == (c.DEFAULT_CONF, c.DEFAULT_IOU, c.DEFAULT_MAX_DET), model
    config = client.get_model_config(c.ULTRALYTICS_RAW_TRT, as_json=True)["config"]
    assert [int(d) for d in config["input"][0]["dims"]] == [3, 320, 320], "the network's float input, as Ultralytics sends it"
    engine = client.get_model_config(c.RAW_TRT, as_json=True)["config"]
    assert [int(d) for d in engine["input"][0]["dims"]] == [320, 320, 3], "Track B's engine reads uint8 RGB HWC"
    assert [int(d) for d in config["output"][0]["dims"]] == [4 + 3, 40 * 40 + 20 * 20 + 10 * 10]


def test_ultralytics_own_triton_client_gets_the_served_names(shapes_server, held_out, shapes_predictor):
    """YOLO("grpc://host:port/yolo11_ultralytics_raw_trt") as a new user would: names, not class0, and the same
    detections."""
    from ultralytics import YOLO

    image = cv2.imdecode(np.frombuffer(held_out[0][0], np.uint8), cv2.IMREAD_COLOR)
    remote = YOLO(f"grpc://{shapes_server.grpc_url}/{c.ULTRALYTICS_RAW_TRT}", task="detect")
    (result,) = remote.predict(image, imgsz=shapes.IMAGE_SIZE, verbose=False)
    assert result.names == dict(enumerate(shapes.NAMES)), result.names
    (local,) = shapes_predictor.predict(image, imgsz=shapes.IMAGE_SIZE, verbose=False)
    assert len(result.boxes) == len(local.boxes) > 0
    np.testing.assert_allclose(result.boxes.xyxy.numpy(), local.boxes.xyxy.numpy(), atol=0.5)


def test_python_models_client_returns_names_with_each_detection(shapes_server, held_out):
    client = shapes_server.grpc()
    spec = served_spec(client, c.TRT_ENSEMBLE)
    data, truth, _ = held_out[0]
    (found,) = unpack_detections(infer_grpc(client, c.TRT_ENSEMBLE, [data]), spec)
    assert len(found) and found.names == tuple(shapes.NAMES[k] for k in found.classes)
    assert sorted(found.names) == sorted(shapes.NAMES[b.cls] for b in truth), "these shapes are easy: all found"


def _truth(item) -> GroundTruth:
    _, boxes, (width, height) = item
    return GroundTruth(np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], np.float32).reshape(-1, 4),
                       np.array([b.cls for b in boxes], np.int32), width, height)


@pytest.fixture(scope="module")
def predictor_map(held_out, shapes_predictor, shapes_server):
    spec = served_spec(shapes_server.grpc(), c.PYTORCH)
    found = [reference_detections(shapes_predictor, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), spec)
             for data, _, _ in held_out]
    return coco_map([_truth(item) for item in held_out], found, spec.num_classes)


def test_the_trained_detector_is_a_real_detector(predictor_map):
    assert predictor_map.map50_95 >= MIN_MAP, predictor_map


@pytest.mark.parametrize("model", c.PUBLIC_MODELS)
def test_every_track_reaches_the_predictors_map_on_held_out_images(shapes_server, held_out, predictor_map, model):
    client = shapes_server.grpc()
    spec = served_spec(client, model)
    found = []
    for start in range(0, len(held_out), 8):
        batch = [data for data, _, _ in held_out[start:start + 8]]
        outputs = infer_grpc(client, model, batch)
        assert contract_violations(outputs, [size for _, _, size in held_out[start:start + 8]], spec) == []
        found += unpack_detections(outputs, spec)
    served = coco_map([_truth(item) for item in held_out], found, spec.num_classes)
    measured(f"{model}, held-out shapes: mAP50-95 {served.map50_95:.4f} (predictor {predictor_map.map50_95:.4f}), "
             f"mAP50 {served.map50:.4f} (predictor {predictor_map.map50:.4f})")
    assert abs(served.map50_95 - predictor_map.map50_95) <= MAP_TOLERANCE, (served, predictor_map)


def test_the_map_check_fires_on_wrong_boxes(held_out, predictor_map, shapes_predictor, shapes_server):
    """Boxes shifted by 3 pixels cost more than the tolerance: the comparison above can fail."""
    spec = served_spec(shapes_server.grpc(), c.PYTORCH)
    shifted = []
    for data, _, _ in held_out:
        d = reference_detections(shapes_predictor, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), spec)
        shifted.append(type(d)(d.boxes + np.float32(3), d.scores, d.classes))
    wrong = coco_map([_truth(item) for item in held_out], shifted, spec.num_classes)
    assert predictor_map.map50_95 - wrong.map50_95 > 5 * MAP_TOLERANCE, (wrong, predictor_map)


@pytest.mark.parametrize("model", c.PUBLIC_MODELS)
def test_tracks_agree_with_track_a_and_track_a_with_the_predictor(shapes_server, held_out, shapes_predictor, model):
    client = shapes_server.grpc()
    spec = served_spec(client, model)
    for data, _, _ in held_out[:6]:
        (track_a,) = unpack_detections(infer_grpc(client, c.PYTORCH, [data]))
        (got,) = unpack_detections(infer_grpc(client, model, [data]))
        assert_same_detections(got, track_a, *tolerance(model), what=model, spec=spec)
        if model == c.PYTORCH:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert_same_detections(got, reference_detections(shapes_predictor, image, spec),
                                   *tolerance(model, against="predictor"), what="predictor", spec=spec)


@pytest.mark.parametrize("model", c.PUBLIC_MODELS)
def test_confident_detections_move_when_the_pixels_move(shapes_server, held_out, model):
    """Shift the picture 24 px right and 16 px down: every track's boxes follow, with the same classes."""
    client = shapes_server.grpc()
    data, _, _ = held_out[6]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    # The same image size, so the letterbox scale is the same and only the position changes.
    moved = np.empty_like(image)
    moved[:] = np.median(image.reshape(-1, 3), 0).astype(np.uint8)
    moved[16:, 24:] = image[:-16, :-24]
    (before,) = unpack_detections(infer_grpc(client, model, [data]))
    (after,) = unpack_detections(infer_grpc(client, model, [cv2.imencode(".png", moved)[1].tobytes()]))
    height, width = image.shape[:2]
    # Shapes away from the border: at the border the new flat margin changes what is there, not only where.
    inside = [(box, cls) for box, cls, score in zip(before.boxes, before.classes, before.scores)
              if score > 0.5 and box[:2].min() >= 8 and box[2] <= width - 24 - 8 and box[3] <= height - 16 - 8]
    assert len(inside) >= 2, f"{model}: the test needs confident detections inside the image: {before}"
    for box, cls in inside:
        expected = box + np.array([24, 16, 24, 16], np.float32)
        distance = np.abs(after.boxes - expected).max(1)
        best = int(distance.argmin())
        assert distance[best] <= 3 and after.classes[best] == cls, (model, box, after.boxes)
        assert np.abs(after.boxes - box).max(1).min() > 3, "boxes left where they were would have passed"


# --- Tracking your detector in video -------------------------------------------------------------------------------

VIDEO_FRAMES = 60
MOT_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def videos() -> dict[int, tuple[list[bytes], list]]:
    """The moving-shapes videos: JPEG frames and each frame's ground truth (identities, visible boxes)."""
    out = {}
    for seed in shapes.VIDEO_SEEDS:
        frames, truth = shapes.moving_video(seed, VIDEO_FRAMES)
        out[seed] = ([shapes.encode(frame) for frame in frames], truth)
    return out


def play(server, stream_id: int, frames: list[bytes], starts: tuple[int, ...] = (0,)) -> list[dict]:
    client = server.grpc()
    try:
        return [send_frame(client, stream_id, frame, start=t in starts, end=t == len(frames) - 1, timeout=120)
                for t, frame in enumerate(frames)]
    finally:
        client.close()


def model_track(weights: Path, frames: list[bytes], spec) -> list[tuple[Detections, np.ndarray]]:
    """Ultralytics' ``model.track`` on each frame, a fresh tracker for the video, at the served size and thresholds
    (``rect=False``: the square input every track serves): per frame the detections it tracked from (the predictor's,
    captured before tracking) and the track ID of each (-1: none)."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    captured = []
    # Runs before the tracker's own callback (registered by track()): the frame's detections as the predictor gave them.
    model.add_callback("on_predict_postprocess_end", lambda p: captured.append(p.results[0].boxes.data.numpy().copy()))
    out = []
    for t, data in enumerate(frames):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        (result,) = model.track(image, persist=t > 0, tracker="bytetrack.yaml", imgsz=spec.imgsz, conf=spec.conf,
                                iou=spec.iou, max_det=spec.max_det, rect=False, verbose=False)
        found = captured[-1]  # x1, y1, x2, y2, score, class
        ids = np.full(len(found), -1, np.int32)
        for row in result.boxes.data.numpy():  # x1, y1, x2, y2 (the track's), ID, the detection's score and class
            (index,) = np.nonzero((found[:, 4] == row[5]) & (found[:, 5] == row[6]))[0]
            ids[index] = int(row[4])
        out.append((Detections(found[:, :4], found[:, 4], found[:, 5].astype(np.int32)), ids))
    return out


def served_frames(answers: list[dict], spec) -> list[tuple[Detections, np.ndarray]]:
    return [(unpack_detections(a, spec)[0], frame_track_ids(a)) for a in answers]


def id_differences(served, reference) -> list[str]:
    """Frames whose detections pair one to one (same class, IoU >= 0.9, each served row with one reference row) but
    whose track IDs differ, and frames whose detections do not pair; empty when every frame has the reference's IDs."""
    problems = []
    for t, ((got, got_ids), (ref, ref_ids)) in enumerate(zip(served, reference, strict=True)):
        if len(got) != len(ref):
            problems.append(f"frame {t}: {len(got)} detections, the reference {len(ref)}")
            continue
        if not len(got):
            continue
        iou = box_iou(got.boxes, ref.boxes)
        iou[got.classes[:, None] != ref.classes[None, :]] = -1
        pair = iou.argmax(1)
        if len(set(pair.tolist())) != len(got) or iou[np.arange(len(got)), pair].min() < 0.9:
            problems.append(f"frame {t}: the detections differ")
        elif not np.array_equal(got_ids, ref_ids[pair]):
            problems.append(f"frame {t}: IDs {got_ids.tolist()}, the reference {ref_ids[pair].tolist()}")
    return problems


def mot_scores(truth: list, tracked: list[tuple[Detections, np.ndarray]]) -> dict[str, float]:
    """MOTA and IDF1 (py-motmetrics, IoU >= 0.5) of tracked boxes against the ground-truth identities."""
    import motmetrics as mm

    accumulator = mm.MOTAccumulator(auto_id=True)
    for objects, (found, ids) in zip(truth, tracked, strict=True):
        kept = ids >= 0
        boxes = found.boxes[kept].astype(np.float64)
        boxes[:, 2:] -= boxes[:, :2]  # tlwh
        truth_boxes = np.array([[o.box.x1, o.box.y1, o.box.x2 - o.box.x1, o.box.y2 - o.box.y1] for o in objects],
                               np.float64).reshape(-1, 4)
        accumulator.update([o.identity for o in objects], ids[kept].tolist(),
                           mm.distances.iou_matrix(truth_boxes, boxes, max_iou=0.5))
    summary = mm.metrics.create().compute(accumulator, metrics=["mota", "idf1", "num_switches"])
    return {name: float(summary[name].iloc[0]) for name in ("mota", "idf1", "num_switches")}


@pytest.fixture(scope="module")
def tracked_videos(shapes_server, videos) -> dict[int, tuple[list, list]]:
    """Each video served as one stream, and through ``model.track``: (served, reference) per seed."""
    client = shapes_server.grpc()
    spec = served_spec(client, c.TRACK)
    client.close()
    return {seed: (served_frames(play(shapes_server, 100 + seed, frames), spec),
                   model_track(SHAPES_WEIGHTS, frames, spec)) for seed, (frames, _) in videos.items()}


def test_tracking_your_detector_gives_model_track_s_ids_and_its_mota_and_idf1(tracked_videos, videos):
    """Shapes crossing, hiding behind others, entering and leaving: every frame has the IDs ``model.track`` gives on
    the same weights and frames, and the MOTA and IDF1 against the ground truth are model.track's within 0.01."""
    for seed, (served, reference) in tracked_videos.items():
        assert id_differences(served, reference) == [], seed
        truth = videos[seed][1]
        got, ref = mot_scores(truth, served), mot_scores(truth, reference)
        measured(f"{c.TRACK}, moving shapes {seed}: MOTA {got['mota']:.4f}, IDF1 {got['idf1']:.4f}, "
                 f"{got['num_switches']:.0f} ID switches; model.track MOTA {ref['mota']:.4f}, IDF1 {ref['idf1']:.4f}")
        assert abs(got["mota"] - ref["mota"]) <= MOT_TOLERANCE and abs(got["idf1"] - ref["idf1"]) <= MOT_TOLERANCE
        # not zero boxes against zero boxes: objects are found and followed through the video
        assert got["idf1"] > 0.5 and min(len(found) for found, _ in served) >= 3
        lasting = {int(i) for i in served[0][1]} & {int(i) for i in served[-1][1]} - {-1}
        assert lasting, f"video {seed}: no object followed from the first frame to the last"


def test_the_id_comparison_fires_on_state_shared_between_streams_or_kept_over_a_start(shapes_server, videos,
                                                                                       tracked_videos):
    """The comparison above fails when a stream's tracker is another's (two videos' frames on one sequence), or
    survives a START (a second video started on a sequence that had the first)."""
    spec = served_spec(shapes_server.grpc(), c.TRACK)
    first, second = shapes.VIDEO_SEEDS[:2]
    a, b = videos[first][0][:30], videos[second][0][:30]
    _, reference = tracked_videos[second]
    mixed = play(shapes_server, 201, [frame for pair in zip(a, b) for frame in pair])
    assert id_differences(served_frames(mixed[1::2], spec), reference[:30])
    kept = play(shapes_server, 202, a + b, starts=(0,))  # no START at the second video: the tracker carries on
    assert id_differences(served_frames(kept[30:], spec), reference[:30])
    restarted = play(shapes_server, 203, a + b, starts=(0, 30))
    assert id_differences(served_frames(restarted[30:], spec), reference[:30]) == []


def test_eight_streams_sent_at_once_each_get_their_solo_answer(shapes_server, videos, tracked_videos):
    spec = served_spec(shapes_server.grpc(), c.TRACK)
    length = 16
    clips = {seed: videos[seed][0][:length] for seed in shapes.VIDEO_SEEDS}
    for seed in range(20, 25):  # five more videos
        clips[seed] = [shapes.encode(frame) for frame in shapes.moving_video(seed, length)[0]]
    alone = {seed: served_frames(play(shapes_server, 300 + seed, clip), spec)
             for seed, clip in clips.items() if seed not in tracked_videos}
    # a stream's first frames are answered the same whether it goes on after them or not
    alone.update({seed: served[:length] for seed, (served, _) in tracked_videos.items()})
    together: dict[int, list] = {}
    threads = [threading.Thread(target=lambda s=seed: together.__setitem__(s, play(shapes_server, 400 + s, clips[s])))
               for seed in clips]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(together) == 8
    for seed in clips:
        assert id_differences(served_frames(together[seed], spec), alone[seed]) == [], seed


def held(server) -> tuple[float, float]:
    """What the tracking instances hold, from their gauges: (streams, tracks)."""
    values = scrape(server.metrics_url, [c.TRACK_STREAMS_METRIC, c.TRACK_OBJECTS_METRIC])
    return values.get((c.TRACK_STREAMS_METRIC, c.TRACK), 0.0), values.get((c.TRACK_OBJECTS_METRIC, c.TRACK), 0.0)


def test_an_idle_stream_is_let_go_with_everything_its_tracker_held(shapes_server, videos):
    """Streams that stop sending without END hold their trackers until the idle timeout (2 s here, set at export),
    then Triton lets them go and the model frees their tracks (the gauges drop to zero without further traffic);
    the stream's next frame is refused for want of START."""
    frames = videos[shapes.VIDEO_SEEDS[0]][0][:20]
    client = shapes_server.grpc()
    for stream in (501, 502):
        for t, frame in enumerate(frames):
            send_frame(client, stream, frame, start=t == 0, timeout=120)  # never END
    streams, tracks = held(shapes_server)
    assert streams >= 2 and tracks >= 6, (streams, tracks)
    deadline = time.monotonic() + TRACK_IDLE_S + 10
    while held(shapes_server) != (0.0, 0.0) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert held(shapes_server) == (0.0, 0.0), "an idle stream's tracker was not freed"
    with pytest.raises(InferenceServerException, match="START"):
        send_frame(client, 501, frames[0], timeout=60)
    client.close()


def test_a_killed_tracking_stub_costs_each_stream_one_restart_and_detect_track_makes_it(shapes_server, videos,
                                                                                         tmp_path):
    """Kill the tracking model's stub while ``detect --track`` plays a video: the supervisor reloads the model, the
    server has lost the sequence, and the client starts it again with the frame it was sending. Every frame gets a
    line; the frame that restarted says why; from there the IDs are those of a fresh sequence on the same frames."""
    frames = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR) for seed in shapes.VIDEO_SEEDS
              for f in videos[seed][0]]
    video = tmp_path / "shapes.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, shapes.VIDEO_SIZE)
    for frame in frames:
        writer.write(frame)
    writer.release()
    out = tmp_path / "tracks.jsonl"
    detect = subprocess.Popen([sys.executable, "-m", "python_models", "detect", "--track", str(video), "--grpc-url",
                               shapes_server.grpc_url, "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while (not out.exists() or len(out.read_text().splitlines()) < 40) and time.monotonic() < deadline:
        time.sleep(0.1)
    reloads = shapes_server.log.read_text(errors="replace").count(f"supervisor: {c.TRACK} reloaded")
    tritonserver = next(p for p in psutil.Process(shapes_server.process.pid).children() if p.name() == "tritonserver")
    (stub,) = [s for s in python_stubs(tritonserver.pid) if s.model == c.TRACK]
    psutil.Process(stub.pid).send_signal(signal.SIGKILL)
    output, _ = detect.communicate(timeout=300)
    assert detect.returncode == 0, output
    assert shapes_server.log.read_text(errors="replace").count(f"supervisor: {c.TRACK} reloaded") == reloads + 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(len(frames))), "a line per frame, in order"
    assert all("detections" in line for line in lines), [line for line in lines if "detections" not in line][:2]
    (restart,) = [line["frame"] for line in lines if "restarted" in line]
    assert 40 <= restart < len(frames), restart
    summary = json.loads(next(line for line in output.splitlines() if line.startswith('{"stream"')))["stream"]
    assert summary["restarts"] == 1 and summary["frames"] == len(frames), summary
    # from the restart on, the IDs of a fresh sequence sent those frames, as detect read them from the file
    capture = cv2.VideoCapture(str(video))
    played = [capture.read()[1] for _ in frames]
    capture.release()
    fresh = play(shapes_server, 601, [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, VIDEO_JPEG_QUALITY])[1].tobytes()
                                      for f in played[restart:]])
    assert [[d["track_id"] for d in line["detections"]] for line in lines[restart:]] == \
        [frame_track_ids(answer).tolist() for answer in fresh]
