"""yolo11-triton soak: half a minute of mixed good and bad traffic with no wrong answer, and it does catch a wrong one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from python_models.export import repository as repo

ROOT = Path(__file__).resolve().parents[1]
SOAK_S = 30
"""Long enough for every model to answer good and bad inputs many times over; the soak that finds leaks is
yolo11-triton soak --duration 3600 on the GPU host (README)."""


def soak(server, tmp_path: Path, duration: float, models: list[str] | None = None, *options: str) -> tuple[int, dict, str]:
    out = tmp_path / "soak.json"
    cmd = [sys.executable, "-m", "python_models", "soak", "--duration", str(duration), "--grpc-url", server.grpc_url,
           "--rss-every", "5", "--out", str(out), *options]
    if models:
        cmd += ["--models", ",".join(models)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 300, stdin=subprocess.DEVNULL)
    assert out.exists(), result.stdout[-2000:] + result.stderr[-2000:]
    return result.returncode, json.loads(out.read_text()), result.stdout


def test_half_a_minute_of_mixed_traffic_has_no_wrong_answer(server, tmp_path):
    returncode, report, printed = soak(server, tmp_path, SOAK_S)
    print(printed)
    assert returncode == 0 and report["wrong_answers"] == 0, report["wrong_examples"]
    assert set(report["models"]) == set(repo.PUBLIC_MODELS)
    for model, outcomes in report["per_model"].items():
        assert outcomes.get("ok", 0) > 0 and outcomes.get("bad input refused", 0) > 0, (model, outcomes)
    assert set(report["outcomes"]) <= {"ok", "bad input refused"}, report["outcomes"]
    assert len(report["rss_mib"]) >= SOAK_S // 5, "RSS sampled over the whole run"


def test_soak_reports_wrong_answers(server, tmp_path):
    returncode, report, _ = soak(server, tmp_path, 5, models=["yolo11_wrong_shapes"])
    assert returncode == 1 and report["wrong_answers"] > 0
    assert any("detection_boxes" in example or "got an answer" in example for example in report["wrong_examples"])


def test_memory_growth_after_the_warm_up_is_measured_per_process_group_and_can_fail_the_run(server, tmp_path):
    returncode, report, printed = soak(server, tmp_path, 6, ["yolo11_instant"], "--rss-every", "1",
                                       "--breakdown-every", "1", "--warmup-s", "0", "--max-growth-percent", "-100")
    assert returncode == 2 and "more than -100.0%" in printed, printed[-1500:]
    grown = report["growth_after_warmup"]
    assert grown["rss_from_mib"] > 0 and grown["pss_from_mib"] > 0
    groups = dict(grown["pss_by_group_mib"])
    assert "tritonserver" in groups and "stub yolo11_instant" in groups, groups
    (_, last) = report["memory_breakdown_mib"][-1]
    assert last["tritonserver"]["pss"] <= last["tritonserver"]["rss"]


def test_growth_is_measured_from_the_end_of_the_warm_up():
    from python_models.cli import soak as tool
    group = {"pss": 100.0}
    breakdowns = [(0, {"a": {"pss": 10.0}}), (300, {"a": group}), (600, {"a": {"pss": 110.0}})]
    grown = tool.growth([(0, 50.0), (300, 1000.0), (600, 1100.0)], breakdowns, 300)
    assert grown["rss_percent"] == 10.0 and grown["pss_percent"] == 10.0  # not +2100% from the cold start
    assert grown["pss_by_group_mib"] == [("a", 10.0)]
    assert tool.growth([(0, 50.0), (100, 60.0)], breakdowns[:1], 300) is None
