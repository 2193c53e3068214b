"""The pieces of the load tools that decide pass or fail: response checks, perf_analyzer I/O, the report table."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from python_models import contract as c
from python_models.client import contract_violations
from python_models.client.metrics import ModelMetrics
from python_models.client.perf_analyzer import parse_csv, write_input_data
from python_models.client.report import Run, markdown_table


SPEC = c.ModelSpec(names=tuple(f"class{i}" for i in range(80)))


def good_outputs(rows: int = 1, n: int = 2, spec: c.ModelSpec = SPEC) -> dict[str, np.ndarray]:
    out = {s.name: np.zeros((rows, *s.dims), s.dtype) for s in spec.public_outputs()}
    out[c.OUTPUT_NUM_DETECTIONS][:] = n
    out[c.OUTPUT_BOXES][:, :n] = [[10, 20, 100, 200], [0, 0, 50, 60]][:n]
    out[c.OUTPUT_SCORES][:, :n] = [0.9, 0.3][:n]
    out[c.OUTPUT_CLASSES][:, :n] = [0, 5][:n]
    return out


def test_a_correct_answer_passes():
    assert contract_violations(good_outputs(2), [(640, 480), (300, 300)], SPEC) == []


@pytest.mark.parametrize("break_it,expected", [
    (lambda o: o.pop(c.OUTPUT_SCORES), "missing"),
    (lambda o: o.__setitem__(c.OUTPUT_BOXES, np.zeros((1, 100, 3), np.float32)), "detection_boxes"),
    (lambda o: o.__setitem__(c.OUTPUT_CLASSES, o[c.OUTPUT_CLASSES].astype(np.int64)), "detection_classes"),
    (lambda o: o[c.OUTPUT_NUM_DETECTIONS].fill(101), "outside 0..100"),
    (lambda o: o[c.OUTPUT_BOXES][0, 0].__setitem__(2, 5000), "outside"),
    (lambda o: o[c.OUTPUT_BOXES][0, 0].__setitem__(slice(None), [100, 20, 10, 200]), "x1<=x2"),
    (lambda o: o[c.OUTPUT_SCORES][0].__setitem__(slice(0, 2), [0.3, 0.9]), "best first"),
    (lambda o: o[c.OUTPUT_SCORES][0].__setitem__(5, 0.7), "past num_detections"),
    (lambda o: o[c.OUTPUT_CLASSES][0].__setitem__(0, 80), "class outside"),
    (lambda o: o[c.OUTPUT_BOXES][0, 1].__setitem__(0, np.nan), "non-finite"),
])
def test_each_contract_break_is_reported(break_it, expected):
    outputs = good_outputs()
    break_it(outputs)
    problems = contract_violations(outputs, [(640, 480)], SPEC)
    assert problems and any(expected in p for p in problems), problems


def test_the_check_follows_the_served_model():
    """Three classes, 10 rows, conf 0.5: what is right for one served model is wrong for another."""
    small = c.ModelSpec(names=("helmet", "vest", "plate"), imgsz=320, conf=0.5, max_det=10)
    outputs = good_outputs(1, 2, small)
    outputs[c.OUTPUT_SCORES][0, :2] = [0.9, 0.6]
    outputs[c.OUTPUT_CLASSES][0, :2] = [0, 2]
    assert contract_violations(outputs, [(640, 480)], small) == []
    assert any("detection_boxes" in p for p in contract_violations(outputs, [(640, 480)], SPEC)), "100 rows expected"
    outputs[c.OUTPUT_CLASSES][0, 1] = 3
    assert any("class outside 0..2" in p for p in contract_violations(outputs, [(640, 480)], small))
    outputs[c.OUTPUT_CLASSES][0, 1] = 2
    outputs[c.OUTPUT_SCORES][0, :2] = [0.9, 0.4]
    assert any("[0.5, 1]" in p for p in contract_violations(outputs, [(640, 480)], small))


def test_perf_input_data_carries_each_file_exactly(tmp_path):
    files = []
    for i, size in enumerate((10, 2000)):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
        files.append(path)
    data = json.loads(write_input_data(files, tmp_path / "in.json").read_text())["data"]
    assert [base64.b64decode(d[c.INPUT_IMAGES]["b64"]) for d in data] == [f.read_bytes() for f in files]
    assert [d[c.INPUT_IMAGES]["shape"] for d in data] == [[10], [2000]]
    with pytest.raises(ValueError):
        write_input_data([], tmp_path / "none.json")


def test_perf_csv_is_read_in_milliseconds(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
        "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\n"
        "4,14.7,17,53137,90000,1169,93914,2186,5,261000,300000,347000,380000\n")
    (row,) = parse_csv(path)
    assert row.concurrency == 4 and row.throughput == pytest.approx(14.7)
    assert (row.p50_ms, row.p95_ms, row.p99_ms) == (261, 347, 380)
    assert row.server_queue_ms == 90 and row.server_compute_ms == pytest.approx(97.269)
    empty = tmp_path / "e.csv"
    empty.write_text("Concurrency,Inferences/Second\n")
    with pytest.raises(ValueError):
        parse_csv(empty)


def test_table_row_per_run_with_leaf_batches():
    from python_models.client.perf_analyzer import PerfResult

    perf = PerfResult(4, 14.7, 261, 300, 347, 380, 90, 97)
    leaf = ModelMetrics(60, 1, 120, 60, 2.0, 3.5, 40.0)
    table = markdown_table([Run("yolo11_trt", perf, {"yolo11_trt": leaf, "yolo11_raw_trt": leaf})])
    row = table.strip().splitlines()[-1]
    assert row.startswith("| yolo11_trt | 4 | 14.7 | 261 | 347 | 380 |")
    assert "raw_trt 2.0" in row and row.endswith("| 1 |"), row
