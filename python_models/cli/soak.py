"""Soak a running server with mixed good and bad traffic over every loaded public model.

    .venv/bin/yolo11-triton soak --duration 600 [--grpc-url 127.0.0.1:8001] [--workers 4] [--out soak.json]
        [--warmup-s 300] [--max-growth-percent 5]

Every good answer is checked against the contract and against the first answer the same
model gave for the same image (batching must not change answers); every bad input must
be refused with INVALID_ARGUMENT. Prints requests, errors by kind, wrong answers and the
server's resident memory over time, and, every ``--breakdown-every`` seconds, its memory
per process group (tritonserver, each model's stubs: RSS, PSS, private and shared pages),
which says what grows. Exits 1 if any answer was wrong, 2 if the server's RSS grew by more
than ``--max-growth-percent`` between the end of the warm-up and the end (when given).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from python_models.cli.paths import ROOT  # noqa: E402
from python_models.cli.options import add_server_urls  # noqa: E402
os.environ.setdefault("YOLO_OFFLINE", "1")

from python_models.client import (  # noqa: E402
    contract_violations,
    image_files,
    image_size,
    infer_grpc,
    ready_public_models,
    served_spec,
    unpack_detections,
)
from python_models.client.matching import differences  # noqa: E402
from python_models.serving.status import memory_by_process, process_tree_rss  # noqa: E402

BAD_SHARE = 0.3
# Answers to the same image from the same model may differ only by batching's float noise.
SAME_ANSWER = (0.99, 1e-3)


def bad_inputs(good: bytes) -> dict[str, bytes]:
    rng = random.Random(0)
    return {
        "zeros": bytes(64),
        "random_bytes": bytes(rng.randrange(256) for _ in range(4096)),
        "truncated_jpeg": good[: len(good) // 2],
        "not_an_image": b"GIF89a" + bytes(100),
        "huge_png_header": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00u0\x00\x00u0\x08\x02\x00\x00\x00\x00\x00\x00\x00"
                           b"\x00\x00\x00\x00IEND\xaeB`\x82",
    }


def find_server_pid(grpc_port: int) -> int | None:
    import psutil

    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "tritonserver" and f"--grpc-port={grpc_port}" in (process.info["cmdline"] or []):
            return process.pid
    return None


class Soak:
    def __init__(self, grpc_url: str, models: list[str], images: dict[str, bytes]) -> None:
        self.grpc_url, self.models, self.images = grpc_url, models, images
        self.sizes = {name: image_size(data) for name, data in images.items()}
        self.bad = bad_inputs(next(iter(images.values())))
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (model, outcome)
        self.wrong: list[str] = []
        self.first_answer: dict[tuple[str, str], object] = {}
        self.lock = threading.Lock()
        self.specs: dict = {}

    def one(self, client, model: str, rng: random.Random) -> None:
        import tritonclient.grpc  # noqa: F401 - the exception type below

        from tritonclient.utils import InferenceServerException

        bad = rng.random() < BAD_SHARE
        name = rng.choice(list(self.bad if bad else self.images))
        data = self.bad[name] if bad else self.images[name]
        try:
            outputs = infer_grpc(client, model, [data], timeout=120)
        except InferenceServerException as exc:
            status = exc.status().removeprefix("StatusCode.")
            if bad and status == "INVALID_ARGUMENT":
                self.record(model, "bad input refused")
            elif bad:
                self.record(model, f"bad input: {status}")
            elif status == "INVALID_ARGUMENT":
                self.record(model, "wrong", f"{model}: good image {name} refused: {exc.message()}")
            else:
                self.record(model, f"error {status}")
            return
        if bad:
            self.record(model, "wrong", f"{model}: bad input {name} got an answer")
            return
        spec = self.spec(client, model)
        problems = contract_violations(outputs, [self.sizes[name]], spec)
        if not problems:
            (got,) = unpack_detections(outputs)
            with self.lock:
                reference = self.first_answer.setdefault((model, name), got)
            problems = differences(got, reference, spec, *SAME_ANSWER) if reference is not got else []
        self.record(model, "wrong" if problems else "ok", f"{model}/{name}: {'; '.join(problems)}" if problems else "")

    def spec(self, client, model: str):
        """What ``model`` states it serves, asked once."""
        with self.lock:
            if model not in self.specs:
                self.specs[model] = served_spec(client, model)
            return self.specs[model]

    def record(self, model: str, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.outcomes[model, outcome] += 1
            if outcome == "wrong" and len(self.wrong) < 50:
                self.wrong.append(detail)

    def worker(self, index: int, stop_at: float) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.grpc_url)
        rng = random.Random(index)
        for model in itertools.islice(itertools.cycle(self.models), index % len(self.models), None):
            if time.monotonic() >= stop_at:
                break
            self.one(client, model, rng)
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    add_server_urls(parser)
    parser.add_argument("--models", help="comma-separated (default: every public model the server has ready)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--server-pid", type=int, help="tritonserver's pid, for RSS (default: found by its gRPC port)")
    parser.add_argument("--rss-every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--breakdown-every", type=float, default=60.0, help="seconds between memory breakdowns")
    parser.add_argument("--warmup-s", type=float, default=300.0, help="growth is measured from this time on")
    parser.add_argument("--max-growth-percent", type=float, help="fail (exit 2) above this RSS growth after warm-up")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    args = parser.parse_args(argv)

    import tritonclient.grpc as grpcclient
    from rich.console import Console
    from rich.table import Table

    console = Console()
    client = grpcclient.InferenceServerClient(args.grpc_url)
    models = args.models.split(",") if args.models else ready_public_models(client)
    images = {p.name: p.read_bytes() for p in image_files()}
    soak = Soak(args.grpc_url, models, images)
    pid = args.server_pid or find_server_pid(int(args.grpc_url.rsplit(":", 1)[1]))
    rss: list[tuple[float, float]] = []
    breakdowns: list[tuple[float, dict]] = []
    next_breakdown = 0.0
    start = time.monotonic()
    stop_at = start + args.duration
    threads = [threading.Thread(target=soak.worker, args=(i, stop_at), daemon=True) for i in range(args.workers)]
    for t in threads:
        t.start()
    with console.status("soaking") as status:
        while any(t.is_alive() for t in threads):
            if pid:
                now = time.monotonic() - start
                rss.append((round(now, 1), round(process_tree_rss(pid) / 2**20, 1)))
                if now >= next_breakdown:
                    breakdowns.append((round(now, 1), memory_by_process(pid)))
                    next_breakdown = now + args.breakdown_every
            done = sum(soak.outcomes.values())
            status.update(f"soaking: {time.monotonic() - start:.0f}/{args.duration:.0f} s, {done} requests, "
                          f"{len(soak.wrong)} wrong")
            time.sleep(min(args.rss_every, max(0.1, stop_at - time.monotonic())))
    for t in threads:
        t.join()
    if pid:
        rss.append((round(time.monotonic() - start, 1), round(process_tree_rss(pid) / 2**20, 1)))
        breakdowns.append((rss[-1][0], memory_by_process(pid)))

    by_kind: Counter[str] = Counter()
    for (_, outcome), n in soak.outcomes.items():
        by_kind[outcome] += n
    report = {
        "duration_s": round(time.monotonic() - start, 1),
        "models": models,
        "requests": sum(by_kind.values()),
        "outcomes": dict(by_kind),
        "per_model": {m: {o: n for (mm, o), n in soak.outcomes.items() if mm == m} for m in models},
        "wrong_answers": by_kind.get("wrong", 0),
        "wrong_examples": soak.wrong[:10],
        "rss_mib": rss,
        "memory_breakdown_mib": breakdowns,
        "growth_after_warmup": growth(rss, breakdowns, args.warmup_s),
    }
    table = Table(title=f"soak: {report['requests']} requests in {report['duration_s']} s over {len(models)} models")
    table.add_column("model")
    kinds = sorted(by_kind)
    for kind in kinds:
        table.add_column(kind, justify="right")
    for model in models:
        table.add_row(model, *(str(report["per_model"][model].get(k, 0)) for k in kinds))
    console.print(table)
    if rss:
        console.print(f"server RSS (MiB): start {rss[0][1]}, max {max(v for _, v in rss)}, end {rss[-1][1]} "
                      f"({len(rss)} samples)")
    grown = report["growth_after_warmup"]
    if grown:
        console.print(f"after the first {args.warmup_s:.0f} s: RSS {grown['rss_from_mib']} -> {grown['rss_to_mib']} MiB "
                      f"({grown['rss_percent']:+.1f}%), PSS {grown['pss_from_mib']} -> {grown['pss_to_mib']} MiB "
                      f"({grown['pss_percent']:+.1f}%); largest growth (PSS MiB): "
                      + ", ".join(f"{g} {d:+.0f}" for g, d in grown["pss_by_group_mib"][:5]))
    console.print(f"wrong answers: {report['wrong_answers']}")
    for example in report["wrong_examples"]:
        console.print(f"  {example}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if report["wrong_answers"]:
        return 1
    if args.max_growth_percent is not None and grown and grown["rss_percent"] > args.max_growth_percent:
        console.print(f"RSS grew {grown['rss_percent']:.1f}% after the warm-up: more than {args.max_growth_percent}%")
        return 2
    return 0


def growth(rss: list[tuple[float, float]], breakdowns: list[tuple[float, dict]], warmup_s: float) -> dict | None:
    """RSS and PSS growth from the first sample at or after ``warmup_s`` to the last, and PSS growth per process
    group, largest first; None when the run was shorter than the warm-up."""
    after = [(t, v) for t, v in rss if t >= warmup_s]
    late = [(t, b) for t, b in breakdowns if t >= warmup_s]
    if len(after) < 2 or len(late) < 2:
        return None
    (_, first), (_, last) = late[0], late[-1]

    def pss(b: dict) -> float:
        return sum(g["pss"] for g in b.values())

    by_group = sorted(((g, round(last[g]["pss"] - first.get(g, {}).get("pss", 0.0), 1)) for g in last),
                      key=lambda kv: -abs(kv[1]))
    return {"from_s": after[0][0], "to_s": after[-1][0], "rss_from_mib": after[0][1], "rss_to_mib": after[-1][1],
            "rss_percent": round(100 * (after[-1][1] - after[0][1]) / after[0][1], 2),
            "pss_from_mib": round(pss(first), 1), "pss_to_mib": round(pss(last), 1),
            "pss_percent": round(100 * (pss(last) - pss(first)) / max(pss(first), 1e-9), 2),
            "pss_by_group_mib": by_group}


if __name__ == "__main__":
    sys.exit(main())
