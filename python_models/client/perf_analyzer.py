"""Drive Triton's perf_analyzer with real encoded images and read its CSV.

perf_analyzer sends the bytes of each file as one ``images`` row (its JSON input
data, base64, one shape per file) and cycles through the files. It never looks at
outputs, so its runs measure speed only: correctness is the locust checks' and the
tests' job.
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from python_models.contract import INPUT_IMAGES

INSTALL_HINT = "run tools/install_perf_analyzer.sh (tools/bootstrap.sh does)"


@dataclass(frozen=True)
class PerfResult:
    """One concurrency level of a perf_analyzer CSV; latencies in milliseconds."""

    concurrency: int
    throughput: float
    """Inferences (images) per second."""
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    server_queue_ms: float
    server_compute_ms: float


def write_input_data(images: Sequence[Path], path: Path) -> Path:
    """perf_analyzer's JSON input data: one entry per image file, its raw bytes as the ``images`` row."""
    if not images:
        raise ValueError("no images to send")
    entries = []
    for image in images:
        data = Path(image).read_bytes()
        entries.append({INPUT_IMAGES: {"b64": base64.b64encode(data).decode(), "shape": [len(data)]}})
    path.write_text(json.dumps({"data": entries}))
    return path


def find_binary() -> Path:
    """The project's perf_analyzer (``.venv/bin``), else one on PATH."""
    local = Path(sys.executable).parent / "perf_analyzer"
    if local.exists():
        return local
    found = shutil.which("perf_analyzer")
    if found:
        return Path(found)
    raise FileNotFoundError(f"no perf_analyzer: {INSTALL_HINT}")


def command(binary: Path, model: str, grpc_url: str, input_data: Path, concurrency: int, csv_path: Path,
            measurement_ms: int = 4000, max_trials: int = 6, stability_percent: int = 25) -> list[str]:
    """One concurrency level over gRPC; stability loosened for CPU-profile latencies of 100 ms and more."""
    return [
        str(binary), "-m", model, "-u", grpc_url, "-i", "grpc", "--input-data", str(input_data),
        "--concurrency-range", str(concurrency), "--measurement-interval", str(measurement_ms),
        "--max-trials", str(max_trials), "--stability-percentage", str(stability_percent), "-f", str(csv_path),
    ]


def parse_csv(path: Path) -> list[PerfResult]:
    """Rows of ``perf_analyzer -f``: microseconds in the file, milliseconds here."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} holds no measurement")

    def ms(row: dict, column: str) -> float:
        return float(row[column]) / 1000

    return [
        PerfResult(
            concurrency=int(row["Concurrency"]),
            throughput=float(row["Inferences/Second"]),
            p50_ms=ms(row, "p50 latency"), p90_ms=ms(row, "p90 latency"),
            p95_ms=ms(row, "p95 latency"), p99_ms=ms(row, "p99 latency"),
            server_queue_ms=ms(row, "Server Queue"),
            server_compute_ms=sum(ms(row, f"Server Compute {part}") for part in ("Input", "Infer", "Output")),
        )
        for row in rows
    ]
