"""tools/soak.py: a minute of mixed good and bad traffic with no wrong answer, and it does catch a wrong one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from python_models.build import repository as repo

ROOT = Path(__file__).resolve().parents[1]
SOAK_S = 60


def soak(server, tmp_path: Path, duration: float, models: list[str] | None = None) -> tuple[int, dict, str]:
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(ROOT / "tools" / "soak.py"), "--duration", str(duration), "--grpc-url", server.grpc_url,
           "--rss-every", "5", "--out", str(out)]
    if models:
        cmd += ["--models", ",".join(models)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 300, stdin=subprocess.DEVNULL)
    assert out.exists(), result.stdout[-2000:] + result.stderr[-2000:]
    return result.returncode, json.loads(out.read_text()), result.stdout


def test_a_minute_of_mixed_traffic_has_no_wrong_answer(server, tmp_path):
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
