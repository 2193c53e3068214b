"""``yolo11-triton detect --track`` against the real CPU-profile server: video files (several in one run) give a line
per frame with the IDs the tracking model gives those frames, an annotated video, and a live MJPEG stream on
127.0.0.1 is followed until Ctrl-C, which ends the sequence cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
from ultralytics.utils import ASSETS

from conftest import COMMAND
from python_models.cli import detect
from python_models.client.bulk import VIDEO_JPEG_QUALITY
from python_models.client.streams import frame_track_ids, send_frame


def pan(path: str, frames: int, step: tuple[int, int], size: int = 480) -> list[np.ndarray]:
    image = cv2.imread(str(ASSETS / path))
    return [image[step[1] * t : step[1] * t + size, step[0] * t : step[0] * t + size].copy() for t in range(frames)]


def write_video(path, frames: list[np.ndarray]) -> list[np.ndarray]:
    """The frames as an MJPG AVI, and as OpenCV reads them back (what the client sends)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    capture = cv2.VideoCapture(str(path))
    read = []
    while (frame := capture.read()[1]) is not None:
        read.append(frame)
    return read


def replayed_ids(server, frames: list[np.ndarray], stream_id: int) -> list[list[int]]:
    client = server.grpc()
    ids = []
    for t, frame in enumerate(frames):
        encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, VIDEO_JPEG_QUALITY])[1].tobytes()
        ids.append(frame_track_ids(send_frame(client, stream_id, encoded, start=t == 0, end=t == len(frames) - 1,
                                              timeout=300)).tolist())
    client.close()
    return ids


def test_video_files_in_one_run_each_get_their_own_sequence_and_an_annotated_video(server, tmp_path):
    clips = {"bus.avi": pan("bus.jpg", 8, (3, 4)), "zidane.avi": pan("zidane.jpg", 6, (10, 2), size=400)}
    sent = {name: write_video(tmp_path / name, frames) for name, frames in clips.items()}
    out = tmp_path / "tracks.jsonl"
    code = detect.main(["--track", *(str(tmp_path / name) for name in clips), "--out", str(out),
                        "--grpc-url", server.grpc_url, "--save-video", str(tmp_path / "annotated")])
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for index, (name, frames) in enumerate(sent.items()):
        mine = [line for line in lines if line["source"] == str(tmp_path / name)]
        assert [line["frame"] for line in mine] == list(range(len(frames)))  # every frame, in order
        got = [[d["track_id"] for d in line["detections"]] for line in mine]
        assert got == replayed_ids(server, frames, 7000 + index), name
        saved = cv2.VideoCapture(str(tmp_path / "annotated" / f"{index}_{name[:-4]}.avi"))
        assert int(saved.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    bus = [d for line in lines if line["source"].endswith("bus.avi") for d in line["detections"]]
    assert sum(d["track_id"] > 0 for d in bus) > 10 and {"box", "class_name", "score", "track_id"} <= set(bus[0])


class Mjpeg(BaseHTTPRequestHandler):
    frames: list[bytes] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        t = 0
        try:
            while True:  # a camera: frames at 30 fps until the client goes
                jpg = self.frames[t % len(self.frames)]
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                 + jpg + b"\r\n")
                t += 1
                time.sleep(1 / 30)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def test_a_live_mjpeg_stream_is_followed_until_ctrl_c_which_ends_the_sequence(server, tmp_path):
    Mjpeg.frames = [cv2.imencode(".jpg", f)[1].tobytes() for f in pan("bus.jpg", 10, (3, 4))]
    camera = ThreadingHTTPServer(("127.0.0.1", 0), Mjpeg)
    threading.Thread(target=camera.serve_forever, daemon=True).start()
    out = tmp_path / "live.jsonl"
    run = subprocess.Popen([str(COMMAND), "detect", "--track", f"http://127.0.0.1:{camera.server_address[1]}/cam",
                            "--out", str(out), "--grpc-url", server.grpc_url], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 6):
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    camera.shutdown()
    assert run.returncode == 130, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    frames = [line["frame"] for line in lines]
    assert len(lines) >= 6 and frames == sorted(set(frames))  # in order, none twice
    (summary,) = [json.loads(text)["stream"] for text in err.splitlines() if text.startswith('{"stream"')]
    assert summary["ended"] == "interrupted" and summary["frames"] == len(lines)
    # a live source drops what the server could not take in time, and says how many
    assert summary["dropped"] >= frames[-1] + 1 - len(lines) > 0
    assert any(d["track_id"] > 0 for line in lines for d in line["detections"])
