"""Track D's guard on a GPU host without Triton's DALI backend (as the lent GPU machines, with the tritonserver of
the nvidia-pytriton wheel): does the DALI leaf's answer pass through the guard, on the GPU, to the next step, and
what does the guard cost per image?

    yolo11-triton check guard-gpu [--stub-python-bin /path/to/numpy1-env/bin] [--requests 400] [--out DIR]

Serves the balanced tier's guard exactly as exported (a Python model on the CPU that calls its leaf through BLS), a
stand-in for the DALI leaf that leaves its letterboxed batch on the GPU as the DALI backend does and fails a batch
holding an undecodable image as it does (``serving/twins/dali_gpu_standin_model.py``), and after them a GPU step
that reports where each image arrived and the sum of its bytes (``serving/twins/placement_probe_model.py``). Three
ensembles: ``guarded`` (the guard, then the probe), ``direct`` (the leaf, then the probe: Track D without a guard)
and ``probe_only`` (the guard Track D had before, which only probed rows and passed their bytes on to a DALI step:
``serving/twins/probe_only_guard_model.py``). Checks that every image arrives on the GPU with the CPU letterbox's
bytes, that damaged scans in a burst of good requests fail alone, and times the three alternately on bus.jpg
(concurrency 1 and 16; every answer's bytes checked), with the CPU time the server's processes spend per image, next
to one core's ``cv2.imdecode`` and ``decode.probe`` of the same bytes. ``--profile-seconds``: also a native
profile of one guard instance under load (py-spy, where installed). Writes guard_gpu.json and guard_gpu.md into
--out; exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from python_models.cli.paths import ROOT  # noqa: E402
os.environ.setdefault("YOLO_OFFLINE", "1")

from python_models import contract as c  # noqa: E402
from python_models.export import repository as repo  # noqa: E402
from python_models.export import repository_files  # noqa: E402
from python_models.client import pack_images  # noqa: E402
from python_models.client.bad_inputs import damaged_scans, exif_rotated  # noqa: E402
from python_models.runtime.decode import decode  # noqa: E402
from python_models.runtime.letterbox import letterbox_rgb  # noqa: E402
from python_models.serving.status import wait_ready  # noqa: E402
from python_models.serving.triton import Ports, find_triton, memory_pools, server_command, server_env  # noqa: E402

mc = repo.mc
TIER = next(t for t in c.DALI_TIERS if t.name == "balanced")
PROBE = "yolo11_placement_probe"
PROBE_ONLY = "yolo11_probe_only_guard"
ENSEMBLES = ("direct", "guarded", "probe_only")
BURST = "guarded: 15 good requests and damaged scans in one burst"


def layout(root: Path, gpu: bool) -> Path:
    spec = repo.default_spec()
    defs = repo.definitions_by_name(spec)
    guard, leaf = defs[repo.dali_guard_name(TIER)], defs[repo.dali_preprocess_name(TIER)]
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    standin = mc.ModelConfig()
    standin.CopyFrom(leaf.config)
    standin.backend = "python"
    standin.ClearField("default_model_filename")
    standin.ClearField("model_warmup")
    standin.instance_group[0].kind = kind
    outputs = [mc.ModelOutput(name=name, data_type=mc.TYPE_INT64 if name == "checksum" else mc.TYPE_INT32, dims=[1])
               for name in ("on_gpu", "checksum")]
    probe = mc.ModelConfig(name=PROBE, backend="python", max_batch_size=TIER.max_batch_size,
                           input=repo._inputs(repo._preprocess_outputs(spec)), output=outputs,
                           instance_group=[mc.ModelInstanceGroup(count=1, kind=kind)],
                           dynamic_batching=mc.ModelDynamicBatching())
    probe.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value = "no"
    preprocessed = {c.LETTERBOXED_IMAGES: c.LETTERBOXED_IMAGES, c.LETTERBOX_TRANSFORM: c.LETTERBOX_TRANSFORM}
    probe_only = mc.ModelConfig()
    probe_only.CopyFrom(guard.config)
    probe_only.name = PROBE_ONLY
    probe_only.ClearField("output")
    probe_only.output.extend(repo._outputs(c.PUBLIC_INPUTS))
    placed = repo._step(PROBE, preprocessed, {"on_gpu": "on_gpu", "checksum": "checksum"})
    steps = {"direct": [repo._step(leaf.name, {c.INPUT_IMAGES: c.INPUT_IMAGES}, preprocessed), placed],
             "guarded": [repo._step(guard.name, {c.INPUT_IMAGES: c.INPUT_IMAGES}, preprocessed), placed],
             "probe_only": [repo._step(PROBE_ONLY, {c.INPUT_IMAGES: c.INPUT_IMAGES}, {c.INPUT_IMAGES: "checked"}),
                            repo._step(leaf.name, {c.INPUT_IMAGES: "checked"}, preprocessed), placed]}
    ensembles = [mc.ModelConfig(name=name, platform="ensemble", max_batch_size=TIER.max_batch_size,
                                input=repo._inputs(c.PUBLIC_INPUTS), output=outputs,
                                ensemble_scheduling=mc.ModelEnsembling(step=steps[name])) for name in ENSEMBLES]
    entries = {guard.name: guard.entry, leaf.name: repo.TWINS + "dali_gpu_standin_model",
               PROBE: repo.TWINS + "placement_probe_model", PROBE_ONLY: repo.TWINS + "probe_only_guard_model"}
    for config in (guard.config, standin, probe, probe_only, *ensembles):
        folder = root / config.name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(repository_files.to_pbtxt(config))
        if config.name in entries:
            (folder / "1" / "model.py").write_text(repository_files.python_entry(entries[config.name]))
    return root


def send(client, model: str, rows: list[bytes]) -> list:
    """One request per row, all at once; per row (on_gpu, checksum) or the exception, in order."""
    import tritonclient.grpc as grpcclient

    answers: queue.Queue = queue.Queue()
    for index, data in enumerate(rows):
        packed = pack_images([data])
        tensor = grpcclient.InferInput(c.INPUT_IMAGES, list(packed.shape), "UINT8")
        tensor.set_data_from_numpy(packed)
        client.async_infer(model, [tensor], lambda result, error, i=index: answers.put((i, result, error)),
                           client_timeout=300)
    results = [None] * len(rows)
    for _ in rows:
        index, result, error = answers.get(timeout=300)
        results[index] = error if error is not None else (int(result.as_numpy("on_gpu")[0, 0]),
                                                          int(result.as_numpy("checksum")[0, 0]))
    return results


def load(client, model: str, data: bytes, requests: int, concurrency: int, expected: int) -> dict:
    """``requests`` requests of ``data``, ``concurrency`` in flight: images/s, latency, and how many answers failed
    or did not hold the image's letterboxed bytes (their sum is not ``expected``)."""
    import threading

    import tritonclient.grpc as grpcclient

    packed = pack_images([data])
    tensor = grpcclient.InferInput(c.INPUT_IMAGES, list(packed.shape), "UINT8")
    tensor.set_data_from_numpy(packed)
    slots, done, latencies, errors = threading.Semaphore(concurrency), queue.Queue(), [], []

    def finished(result, error, started):
        latencies.append(time.perf_counter() - started)
        if error is not None:
            errors.append(str(error))
        elif int(result.as_numpy("checksum")[0, 0]) != expected:
            errors.append("wrong bytes")
        slots.release()
        done.put(1)

    start = time.perf_counter()
    for _ in range(requests):
        slots.acquire()
        sent = time.perf_counter()
        # tritonclient calls back with keywords: result=, error=.
        client.async_infer(model, [tensor], lambda result, error, s=sent: finished(result, error, s),
                           client_timeout=300)
    for _ in range(requests):
        done.get(timeout=300)
    elapsed = time.perf_counter() - start
    return {"images_per_s": round(requests / elapsed, 1), "p50_ms": round(1e3 * statistics.median(latencies), 3),
            "mean_ms": round(1e3 * statistics.fmean(latencies), 3), "errors": len(errors)}


def processes(server_pid: int) -> dict[str, list]:
    """The server's processes by role: ``server``, and each stub by its model's name."""
    import psutil

    groups: dict[str, list] = {}
    root = psutil.Process(server_pid)
    for process in [root, *root.children(recursive=True)]:
        command = process.cmdline()
        name = Path(command[1]).parent.parent.name if len(command) > 1 and "stub" in command[0] else "server"
        groups.setdefault(name, []).append(process)
    return groups


def cpu_seconds(group: list) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in group)


def gpu_memory_mib(groups: dict[str, list]) -> dict[str, float]:
    """MiB of GPU memory each role holds (nvidia-smi's compute processes): a CUDA context shows as its own."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    used = {int(pid): float(mib) for pid, mib in (line.split(",") for line in out.strip().splitlines() if "," in line)}
    return {name: sum(used.get(p.pid, 0.0) for p in group) for name, group in groups.items()}


def costs(timing: list[dict], one_core: dict[str, float]) -> list[dict]:
    """Per front step and concurrency: the CPU milliseconds per image that tritonserver and the front step's own
    instances spend beyond what tritonserver spends for the ``direct`` ensemble (no front step), averaged over the
    runs, and that as a share of one core's OpenCV decode. The leaf and the last step do the same work in every
    ensemble (the stand-in leaf decodes on the CPU: its noise would drown the difference), so they are left out."""
    fronts = {"direct": "server", "guarded": repo.dali_guard_name(TIER), "probe_only": PROBE_ONLY}

    def total(ensemble: str, concurrency: int) -> float:
        runs = [r["cpu_ms_per_image"].get("server", 0.0) + (r["cpu_ms_per_image"].get(fronts[ensemble], 0.0)
                                                           if ensemble != "direct" else 0.0)
                for r in timing if r["ensemble"] == ensemble and r["concurrency"] == concurrency]
        return statistics.fmean(runs) if runs else float("nan")

    rows = []
    for concurrency in sorted({r["concurrency"] for r in timing}):
        for ensemble in ENSEMBLES[1:]:
            extra = total(ensemble, concurrency) - total("direct", concurrency)
            decode = one_core.get("cv2.imdecode")
            rows.append({"ensemble": ensemble, "concurrency": concurrency, "cpu_ms_over_direct": round(extra, 3),
                         "of_decode": f"{100 * extra / decode:.0f}%" if decode else ""})
    return rows


def one_core_ms(data: bytes, repeat: int = 200) -> dict[str, float]:
    """Median milliseconds, on this process's one thread, of a full OpenCV decode of ``data`` and of the guard's
    header check: what the guard's cost per image is held against."""
    import cv2

    from python_models.runtime.decode import probe

    cv2.setNumThreads(1)
    array = np.frombuffer(data, np.uint8)
    result = {}
    for name, work in (("cv2.imdecode", lambda: cv2.imdecode(array, cv2.IMREAD_COLOR)), ("probe", lambda: probe(array))):
        work()
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            work()
            samples.append(time.perf_counter() - start)
        result[name] = round(1e3 * statistics.median(samples), 4)
    return result


def profile(client, groups: dict[str, list], data: bytes, expected: int, seconds: float, out: Path) -> str:
    """A native py-spy profile (functions by own samples) of the first guard instance under load at concurrency 16."""
    import shutil
    import threading

    spy = shutil.which("py-spy")
    guard = groups.get(repo.dali_guard_name(TIER), [])
    if not spy or not guard:
        return "py-spy is not installed" if not spy else "no guard process"
    raw = out / "guard_profile.txt"
    done = threading.Event()

    def keep_busy():
        while not done.is_set():
            load(client, "guarded", data, 200, 16, expected)

    worker = threading.Thread(target=keep_busy)
    worker.start()
    time.sleep(2)
    subprocess.run([spy, "record", "--native", "--pid", str(guard[0].pid), "--duration", str(int(seconds)),
                    "--format", "raw", "--output", str(raw)], capture_output=True, timeout=seconds + 60)
    done.set()
    worker.join()
    own: dict[str, int] = {}
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, count = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        own[leaf] = own.get(leaf, 0) + int(count)
    total = sum(own.values()) or 1
    top = sorted(own.items(), key=lambda kv: -kv[1])[:25]
    return "\n".join(f"{100 * n / total:5.1f}% {name[:160]}" for name, n in top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stub-python-bin", type=Path, help="bin/ of the environment the Python backend stub runs in")
    parser.add_argument("--requests", type=int, default=400, help="requests per timed run")
    parser.add_argument("--grpc-port", type=int, default=18401)
    parser.add_argument("--profile-seconds", type=float, default=0,
                        help="record one guard instance natively with py-spy this long, at concurrency 16")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "guard_gpu")
    args = parser.parse_args(argv)

    import torch
    import tritonclient.grpc as grpcclient
    from ultralytics.utils import ASSETS

    gpu = torch.cuda.is_available()
    args.out.mkdir(parents=True, exist_ok=True)
    repository = layout(args.out / "repository", gpu)
    install, ports = find_triton(), Ports(args.grpc_port - 1, args.grpc_port, args.grpc_port + 1)
    command = server_command(install, repository, ports)
    if gpu:
        command.append(f"--cuda-memory-pool-byte-size=0:{memory_pools(repo.default_spec())[0]}")
    log = open(args.out / "server.log", "wb")
    server = subprocess.Popen(command, env=server_env(install, args.stub_python_bin), stdout=log,
                              stderr=subprocess.STDOUT)
    report: dict = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(),
                             "gpu": torch.cuda.get_device_name(0) if gpu else None, "cpu": platform.processor(),
                             "cores": os.cpu_count(), "command": " ".join(["python3", *sys.argv])},
                    "checks": {}}
    try:
        if not wait_ready(f"http://127.0.0.1:{ports.http}/v2/health/ready", server, timeout_s=600):
            raise SystemExit(f"tritonserver did not become ready: see {log.name}")
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports.grpc}")
        bus = (Path(ASSETS) / "bus.jpg").read_bytes()
        images = {"bus.jpg": bus, "zidane.jpg": (Path(ASSETS) / "zidane.jpg").read_bytes(),
                  "bus.jpg EXIF 6": exif_rotated(bus, 6)}
        expected = {n: int(letterbox_rgb(decode(d), repo.default_spec().imgsz)[0].astype(np.int64).sum())
                    for n, d in images.items()}
        for model in ENSEMBLES:
            got = dict(zip(images, send(client, model, list(images.values()))))
            report["checks"][f"{model}: bytes and placement"] = {
                n: {"on_gpu": g[0], "same_bytes": g[1] == expected[n]} if isinstance(g, tuple) else str(g)
                for n, g in got.items()}
        damaged = list(damaged_scans(bus).values())
        rows = [bus] * 15
        for index, data in enumerate(damaged):
            rows.insert(3 * index + 1, data)
        outcome = send(client, "guarded", rows)
        report["checks"][BURST] = {
            "damaged sent": len(damaged),
            "good answered with the right bytes": sum(isinstance(o, tuple) and o[1] == expected["bus.jpg"]
                                                      for d, o in zip(rows, outcome) if d not in damaged),
            "good on the GPU": sum(isinstance(o, tuple) and o[0] == 1 for d, o in zip(rows, outcome) if d not in damaged),
            "damaged refused INVALID_ARGUMENT": sum(not isinstance(o, tuple) and o.status() == "StatusCode.INVALID_ARGUMENT"
                                                    for d, o in zip(rows, outcome) if d in damaged)}
        groups = processes(server.pid)
        report["gpu_memory_mib"] = gpu_memory_mib(groups)
        report["one_core_ms"] = one_core_ms(bus)
        if args.profile_seconds:
            report["profile"] = profile(client, groups, bus, expected["bus.jpg"], args.profile_seconds, args.out)
        timing = []
        for concurrency in (1, 16):
            for attempt in range(2):
                for model in ENSEMBLES:
                    load(client, model, bus, max(20, args.requests // 10), concurrency, expected["bus.jpg"])  # warm
                    before = {name: cpu_seconds(group) for name, group in groups.items()}
                    row = load(client, model, bus, args.requests, concurrency, expected["bus.jpg"])
                    after = {name: cpu_seconds(group) for name, group in groups.items()}
                    row.update({"ensemble": model, "concurrency": concurrency, "run": attempt + 1,
                                "cpu_ms_per_image": {n: round(1e3 * (after[n] - before[n]) / args.requests, 3)
                                                     for n in groups if after[n] - before[n] > 0}})
                    timing.append(row)
                    print(json.dumps(row), flush=True)
        report["timing"] = timing
    finally:
        server.terminate()
        server.wait(timeout=120)
    checks = report["checks"]
    placed = [v for model in ENSEMBLES for v in checks[f"{model}: bytes and placement"].values()]
    burst = checks[BURST]
    report["passed"] = (all(isinstance(v, dict) and v["same_bytes"] and v["on_gpu"] == int(gpu) for v in placed)
                        and burst["good answered with the right bytes"] == 15
                        and burst["damaged refused INVALID_ARGUMENT"] == burst["damaged sent"])
    report["cost"] = costs(report.get("timing", []), report.get("one_core_ms", {}))
    (args.out / "guard_gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Track D's guard on {report['meta']['gpu'] or 'the CPU'}: {'PASSED' if report['passed'] else 'FAILED'}",
             "", "```", json.dumps(report["meta"], indent=1), json.dumps(checks, indent=1),
             json.dumps(report.get("gpu_memory_mib"), indent=1), "```", "",
             "| ensemble | concurrency | run | images/s | p50 ms | mean ms | CPU ms per image (by process) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['ensemble']} | {r['concurrency']} | {r['run']} | {r['images_per_s']} | {r['p50_ms']} | "
              f"{r['mean_ms']} | {', '.join(f'{k} {v}' for k, v in r['cpu_ms_per_image'].items())} |"
              + (f" {r['errors']} bad answers |" if r["errors"] else "")
              for r in report.get("timing", [])]
    lines += ["", f"One core here: {report.get('one_core_ms')} (ms per bus.jpg).", "",
              "| front step | concurrency | CPU ms per image over `direct` (server and the step) | of a cv2.imdecode |",
              "|---|---|---|---|"]
    lines += [f"| {r['ensemble']} | {r['concurrency']} | {r['cpu_ms_over_direct']} | {r['of_decode']} |"
              for r in report["cost"]]
    if report.get("profile"):
        lines += ["", "Native profile of one guard instance under load (own samples):", "", "```", report["profile"], "```"]
    (args.out / "guard_gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
