"""One benchmark report: a JSON of every figure, a markdown table, and PNG plots, one line per track."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from python_models.client import perf_analyzer as pa
from python_models.client.metrics import SUMMARY_FAMILIES, ModelMetrics, scrape, summarise
from python_models.client.perf_analyzer import PerfResult

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
THROUGHPUT_PNG = "throughput.png"
LATENCY_PNG = "latency_p95.png"


@dataclass(frozen=True)
class Run:
    """One public model at one concurrency: the client's view and the server's, per model it ran."""

    model: str
    perf: PerfResult
    server: dict[str, ModelMetrics] = field(default_factory=dict)
    """The public model and each leaf of its ensemble, from Triton's metrics before and after the run."""

    @property
    def failures(self) -> float:
        """Failed requests of the public model (an ensemble's count includes its leaves' failures)."""
        own = self.server.get(self.model)
        return own.failures if own else 0.0


class PerfAnalyzerFailed(RuntimeError):
    """perf_analyzer exited with an error or wrote no CSV; the message is the end of its output."""


def measure(command: list[str], csv_path: Path, model: str, metrics_url: str, models: Sequence[str]) -> Run:
    """Run one perf_analyzer level (``command`` writes ``csv_path``) between two scrapes of Triton's metrics.

    ``models``: the public model and the leaves whose server-side figures the run records.
    Its output is kept next to the CSV, as ``.log``.
    """
    import subprocess

    csv_path.parent.mkdir(parents=True, exist_ok=True)
    before = scrape(metrics_url, SUMMARY_FAMILIES)
    result = subprocess.run(command, capture_output=True, text=True)
    after = scrape(metrics_url, SUMMARY_FAMILIES)
    output = result.stdout + result.stderr
    csv_path.with_suffix(".log").write_text(output)
    if result.returncode != 0 or not csv_path.exists():
        raise PerfAnalyzerFailed("\n".join(output.strip().splitlines()[-5:]))
    (perf,) = pa.parse_csv(csv_path)
    return Run(model, perf, {m: summarise(before, after, m) for m in models})


def _short(leaf: str, model: str) -> str:
    return "self" if leaf == model else leaf.removeprefix("yolo11_")


def markdown_table(runs: Sequence[Run]) -> str:
    lines = [
        "| track | concurrency | images/s | p50 ms | p95 ms | p99 ms | avg batch per leaf | queue / compute ms per leaf | failures |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        leaves = {name: m for name, m in run.server.items() if name != run.model or len(run.server) == 1}
        batch = ", ".join(f"{_short(n, run.model)} {m.avg_batch:.1f}" for n, m in leaves.items())
        times = ", ".join(f"{_short(n, run.model)} {m.queue_ms:.0f}/{m.compute_ms:.0f}" for n, m in leaves.items())
        p = run.perf
        lines.append(f"| {run.model} | {p.concurrency} | {p.throughput:.1f} | {p.p50_ms:.0f} | {p.p95_ms:.0f} | "
                     f"{p.p99_ms:.0f} | {batch} | {times} | {run.failures:.0f} |")
    return "\n".join(lines) + "\n"


def _plot(runs: Sequence[Run], value, ylabel: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for model in dict.fromkeys(r.model for r in runs):
        points = sorted((r.perf.concurrency, value(r)) for r in runs if r.model == model)
        axes.plot([c for c, _ in points], [v for _, v in points], marker="o", label=model)
    levels = sorted({r.perf.concurrency for r in runs})
    axes.set_xscale("log", base=2)
    axes.set_xticks(levels, [str(c) for c in levels])
    axes.set_ylim(bottom=0)
    axes.set_xlabel("concurrent requests")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(out_dir: Path, runs: Sequence[Run], meta: dict, extra: dict | None = None) -> dict[str, Path]:
    """Write the report files into ``out_dir``; return them by name. ``extra``: further top-level JSON sections."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in (REPORT_JSON, REPORT_MD, THROUGHPUT_PNG, LATENCY_PNG)}
    paths[REPORT_JSON].write_text(json.dumps({
        "meta": meta,
        "runs": [{"model": r.model, "perf": asdict(r.perf), "server": {k: asdict(v) for k, v in r.server.items()},
                  "failures": r.failures} for r in runs],
        **(extra or {}),
    }, indent=2) + "\n")
    context = ", ".join(f"{k}: {v}" for k, v in meta.items() if k in ("machine", "profile", "weights", "date"))
    paths[REPORT_MD].write_text(f"# Benchmark\n\n{context}\n\nCommand: `{meta.get('command', '')}`\n\n"
                                + markdown_table(runs))
    _plot(runs, lambda r: r.perf.throughput, "images / s", "Throughput", paths[THROUGHPUT_PNG])
    _plot(runs, lambda r: r.perf.p95_ms, "p95 latency, ms", "p95 latency", paths[LATENCY_PNG])
    return paths
