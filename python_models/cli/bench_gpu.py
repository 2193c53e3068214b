"""Track A and the DALI pipeline on a GPU host, measured and checked; writes the benchmark report format.

    yolo11-triton bench gpu --weights yolo11s.pt [--precision fp16] [--instances 2]
        [--concurrency 1,16,64,128,256] [--stub-python-bin /path/to/numpy1-env/bin] [--out results/NAME]
    yolo11-triton bench gpu --gpus 1,2 [--cores-per-gpu 16] --concurrency 64,128,160 ...   # scaling

For a GPU host without TensorRT or the Triton TensorRT/DALI backends (the embedded
tritonserver of the nvidia-pytriton wheel serves Python models there). It:
1. saves the weights as Track A's model.pt and serves ``yolo11_pytorch`` alone,
   KIND_GPU, with the chosen precision and instance count;
2. checks parity: the server's detections on bus.jpg and zidane.jpg against the
   Ultralytics predictor on the same weights and precision on the same GPU;
3. runs perf_analyzer over gRPC on real JPEGs at each concurrency, with Triton's
   queue / compute input / infer / output times per request;
4. times the project's DALI pipeline (mixed decoder) in-process at batch 1, 32 and
   128, and checks its letterbox against the CPU one, where nvidia-dali is installed;
5. writes report.json, report.md, throughput.png and latency_p95.png with the device,
   driver, torch and Triton versions.

With ``--gpus 1,2,4,8`` it does steps 1 to 3 once per GPU count (Track A's instance group
restricted to the first N GPUs, ``--instances`` on each; ``--concurrency`` is then per GPU),
records each GPU's utilisation and the host's CPU use while each level runs, drives the
busiest level again with ``yolo11-triton detect`` and checks every one of its answers against the
single-request answer, and writes ``scaling.json`` / ``scaling.md``: images/s, p50/p99 and the
scaling efficiency (images/s on N GPUs / (N x images/s on 1)), one folder per count.
``--cores-per-gpu K`` runs the server on K cores per GPU (``taskset``) and the clients on the
others, so that every GPU count gets the same CPU per GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from python_models.cli.paths import ROOT  # noqa: E402
os.environ.setdefault("YOLO_OFFLINE", "1")

from python_models import contract as c  # noqa: E402
from python_models.client import perf_analyzer as pa  # noqa: E402
from python_models.export import repository as repo  # noqa: E402
from python_models.export import repository_files  # noqa: E402
from python_models.client.report import PerfAnalyzerFailed, measure, write_report  # noqa: E402
from python_models.serving.triton import Ports, find_triton, server_command, server_env  # noqa: E402
from python_models.serving.status import wait_ready  # noqa: E402
from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402

PARITY_IMAGES = ("bus.jpg", "zidane.jpg")


def track_a_version(out: Path) -> Path:
    """Track A's version folder (model.pt, its compiled caches) in the repository ``layout`` writes under ``out``."""
    return out / "repository" / repo.PYTORCH / "1"


def layout(out: Path, weights: str, precision: str, instances: int, decode_threads: int = 0,
           cuda_graphs: bool = True, gpus: int | None = None, decode: str = repo.PYTORCH_DECODE,
           network: str = repo.PYTORCH_NETWORK, nms: str = repo.PYTORCH_NMS,
           caches_from: Path | None = None) -> tuple[Path, bool, dict | None]:
    """A repository holding only Track A, on the GPU: ``instances`` on every GPU, or on each of the first ``gpus``;
    with ``network`` compiled, its caches built (or kept, when up to date) as the export builds them, starting from
    the caches of the layout under ``caches_from`` when this one has none. Returns the repository, whether the
    network is untrained, and the caches' record."""
    from python_models.export.weights import model_spec, resolve_weights

    version = track_a_version(out)
    repository = version.parents[1]
    version.mkdir(parents=True, exist_ok=True)
    resolved = resolve_weights(weights)
    model, untrained = resolved.model, resolved.untrained
    model.save(str(version / "model.pt"))
    config = repo.pytorch_config(model_spec(model), mc.ModelInstanceGroup.KIND_GPU, instances, precision, decode, network)
    config.parameters["decode_threads"].string_value = str(decode_threads)
    config.parameters["cuda_graphs"].string_value = "true" if cuda_graphs else "false"
    config.parameters["nms"].string_value = nms
    if gpus is not None:
        for group in config.instance_group:
            group.gpus[:] = list(range(gpus))
        # The queue bound is per model, sized for one GPU's instances, scaled as the export scales it (--gpus).
        repo.scale_queue(config, gpus)
    (repository / repo.PYTORCH / "config.pbtxt").write_text(repository_files.to_pbtxt(config))
    (version / "model.py").write_text(repository_files.python_entry(repo.RUNTIME + "pytorch_model"))
    # The tracking model over Track A, as the export writes it for a GPU host (``--streams`` drives it).
    tracking = repo.track_definition(model_spec(model), repo.TrackingOptions(detector=repo.PYTORCH))
    (repository / tracking.name / "1").mkdir(parents=True, exist_ok=True)
    (repository / tracking.name / "config.pbtxt").write_text(repository_files.to_pbtxt(tracking.config))
    for name, text in repository_files.version_files(tracking).items():
        (repository / tracking.name / "1" / name).write_text(text)
    record = None
    if network == "compiled":
        from python_models.export.compiled_network import build_compiled_network

        copy_compiled_caches(track_a_version(caches_from) if caches_from else None, version)
        record = build_compiled_network(version, precision, config.max_batch_size, model_spec(model).imgsz)
    return repository, untrained, record


def copy_compiled_caches(source: Path | None, version: Path) -> bool:
    """Copy another layout's compiled caches into ``version`` when it has none, so that a second server of the same
    weights (another instance count) does not autotune again for ten minutes; the build keeps them only if their
    record matches (weights, precision, GPU, torch). True when copied."""
    from python_models.runtime.network import COMPILE_CACHE, COMPILED_RECORD

    if source is None or (version / COMPILED_RECORD).exists() or not (source / COMPILED_RECORD).exists():
        return False
    cache = source / COMPILE_CACHE
    if not cache.exists():
        return False
    (shutil.copytree if cache.is_dir() else shutil.copy2)(cache, version / COMPILE_CACHE)
    shutil.copy2(source / COMPILED_RECORD, version / COMPILED_RECORD)
    return True


STUB_IMPORTS = ("import numpy, cv2, torch, torchvision, ultralytics, python_models.runtime.letterbox, "
                "python_models.runtime.network")


def check_stub_environment(stub_python_bin: Path | None) -> None:
    """Fail before the server starts, with the reason, unless the Python backend stub's environment (the first
    ``python3`` on its PATH) imports Track A with numpy 1.x (numpy 2 breaks the wheel's Python backend silently)."""
    python = (stub_python_bin / "python3") if stub_python_bin else Path(sys.executable)
    code = f"{STUB_IMPORTS}; assert numpy.__version__ < '2', 'numpy ' + numpy.__version__ + ' (needs < 2)'"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd="/",
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if result.returncode != 0:
        raise SystemExit(f"the Python backend's environment ({python}) cannot run Track A: "
                         f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}. "
                         "It needs numpy < 2, OpenCV 4, torch, ultralytics and this checkout importable "
                         "(e.g. a .pth file naming its root)")


def parity(grpc_url: str, weights_pt: Path, precision: str, decode: str = "cpu") -> dict:
    """Server vs the Ultralytics predictor, same weights, same precision, same GPU; and one request of 8 images
    (a batch of 8: another CUDA graph) against the single-request answers for the same images."""
    import tritonclient.grpc as grpcclient
    from ultralytics import YOLO
    from ultralytics.utils import ASSETS

    from python_models.client import infer_grpc, served_spec, unpack_detections
    from python_models.client.matching import differences, max_score_difference, predictor_detections, tolerance

    model = YOLO(str(weights_pt))
    client = grpcclient.InferenceServerClient(grpc_url)
    allowed = tolerance(repo.PYTORCH, precision, against="predictor", decode=decode)
    spec = served_spec(client, repo.PYTORCH)
    results, single = {}, {}
    for name in PARITY_IMAGES:
        data = (Path(ASSETS) / name).read_bytes()
        ref = predictor_detections(model, Path(ASSETS) / name, spec, half=precision == "fp16", device=0)
        (got,) = unpack_detections(infer_grpc(client, repo.PYTORCH, [data]))
        single[name] = got
        problems = differences(got, ref, spec, *allowed) if len(ref) else ["the reference found nothing"]
        results[name] = {"served": len(got), "reference": len(ref), "problems": problems,
                         "max_score_diff": max_score_difference(got, ref, allowed.min_iou)}
    names = [PARITY_IMAGES[i % len(PARITY_IMAGES)] for i in range(8)]
    batched = unpack_detections(infer_grpc(client, repo.PYTORCH, [(Path(ASSETS) / n).read_bytes() for n in names]))
    batch_problems = [f"row {i} ({n}): {p}" for i, (n, got) in enumerate(zip(names, batched))
                      for p in differences(got, single[n], spec, *allowed)]
    return {"tolerance": allowed._asdict(), "images": results, "batch_of_8_vs_single": batch_problems[:6],
            "passed": all(not r["problems"] for r in results.values()) and not batch_problems}


def instance_load_times(server_log: Path) -> dict[str, float]:
    """Seconds each Track A instance took to load its network (compiled from caches, CUDA graphs), from its log line."""
    import re

    text = server_log.read_text(errors="replace") if server_log.exists() else ""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"(\S+): network \S+.*ready in ([0-9.]+) s", text)}


def execute_timing(server_log: Path) -> list[str]:
    """Each instance's last ``timing`` line (YOLO11_TRITON_TIMING=1): decode+letterbox / forward / NMS per image."""
    text = server_log.read_text(errors="replace") if server_log.exists() else ""
    last = {}
    for line in text.splitlines():
        if line.startswith("timing "):
            last[line.split(":")[0]] = line
    return sorted(last.values())


def images_per_s(step, images: int, device, seconds: float) -> float:
    """``images`` per call of ``step``, timed for ``seconds`` on ``device`` after one warm-up call (GPU work
    included: synchronised before and after)."""
    import torch

    step()
    torch.cuda.synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += images
    torch.cuda.synchronize(device)
    return round(count / (time.perf_counter() - start), 1)


def gpu_pipeline(weights_pt: Path, precision: str, batch: int, seconds: float, package_dir: Path | None) -> dict:
    """Track A's GPU work in one process, no server: the forward alone (CUDA graph of the eager network, compiled,
    compiled replayed from CUDA graphs) and the served pipeline (headers read, batched nvJPEG, device
    letterbox, forward, NMS and packing) at the served batch size, on bus.jpg and zidane.jpg alternating as
    perf_analyzer sends them; the device letterbox against the CPU one; the Ultralytics predictor on the same
    weights and GPU as the peer."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import ASSETS

    from python_models.runtime import gpu_decode, network
    from python_models.runtime.nms import nms, nms_on_device, pack_detections
    from python_models.runtime.decode import decode, probe
    from python_models.runtime.letterbox import LetterboxTransform, letterbox_padded
    from python_models.client.matching import predictor_detections

    device, half = torch.device("cuda:0"), precision == "fp16"
    torch.cuda.set_device(device)
    net = network.load_network(weights_pt, device, half)
    from python_models.export.weights import model_spec

    model = YOLO(str(weights_pt))  # the predictor below, and what the network serves
    spec = model_spec(model)
    size = spec.imgsz
    encoded = [(Path(ASSETS) / PARITY_IMAGES[i % len(PARITY_IMAGES)]).read_bytes() for i in range(batch)]
    rows = [np.frombuffer(e, np.uint8) for e in encoded]
    out: dict = {"batch": batch, "precision": precision}

    def rate(step, images: int) -> float:
        return images_per_s(step, images, device, seconds)

    padded = torch.stack([torch.from_numpy(letterbox_padded(decode(r), size)[0]) for r in rows]).to(device)
    graphed = network.GraphedForward(net, device, half, batch, size)
    forward = {"eager network, CUDA graph": rate(lambda: graphed(padded), batch)}
    run_forward = graphed  # what the pipeline below runs: the compiled network's graphs when they could be captured
    if package_dir is not None:
        from python_models.export.compiled_network import head_differences

        started = time.perf_counter()
        compiled = network.load_compiled(package_dir, net, device, half, batch, size)
        out["compiled_load_s"] = round(time.perf_counter() - started, 2)
        forward["compiled"] = rate(lambda: compiled(padded), batch)
        try:
            compiled_graphed = network.GraphedForward(net, device, half, batch, size, compiled)
            forward["compiled, CUDA graph"] = rate(lambda: compiled_graphed(padded), batch)
            run_forward = compiled_graphed
        except Exception as exc:  # report it; the served default follows from these figures
            forward["compiled, CUDA graph"] = f"{type(exc).__name__}: {exc}"[:300]
        # The build's own check, on these images: the compiled head output against the eager one.
        out["compiled_vs_eager"] = head_differences(compiled(padded), graphed(padded)) or "within tolerance"
    out["forward_images_per_s"] = forward

    decoder = gpu_decode.nvjpeg_decoder(device)
    canvas = torch.empty((batch, size, size, 3), dtype=torch.uint8, device=device)
    tensors = [torch.from_numpy(r.copy()) for r in rows]
    decoded = decoder(tensors)
    out["pipeline_forward"] = "compiled, CUDA graph" if run_forward is not graphed else "eager network, CUDA graph"
    with ThreadPoolExecutor(8) as pool:
        def pipeline(with_nms: bool = True):
            transforms = gpu_decode.letterbox_rows(rows, size, decoder, canvas, pool)
            raw = run_forward(canvas[: len(transforms)])
            if with_nms:
                pack_detections(nms(raw, spec), transforms, spec.max_det)

        def pipeline_device_nms():
            transforms = gpu_decode.letterbox_rows(rows, size, decoder, canvas, pool)
            params = torch.from_numpy(np.stack([t.to_array() for t in transforms])).to(device, non_blocking=True)
            nms_on_device(run_forward(canvas[: len(transforms)]), spec, params)

        out["pipeline_images_per_s"] = {
            "header reading alone (decode.probe, one thread)": rate(lambda: [probe(r) for r in rows], batch),
            "nvJPEG decode alone (torchvision, one call)": rate(lambda: decoder(tensors), batch),
            "device letterbox alone (decoded images)": rate(lambda: gpu_decode.letterbox_on_device(decoded, size, canvas), batch),
            "decode + letterbox (nvJPEG, device)": rate(lambda: gpu_decode.letterbox_rows(rows, size, decoder, canvas, pool), batch),
            "decode + letterbox + forward": rate(lambda: pipeline(False), batch),
            "decode + letterbox + forward + NMS + pack on the host (nms host)": rate(pipeline, batch),
            "decode + letterbox + forward + NMS + pack on the device (nms device)": rate(pipeline_device_nms, batch),
        }
        raw = run_forward(canvas[:batch]).clone()
        params = torch.from_numpy(np.stack([t.to_array() for t in gpu_decode.letterbox_rows(rows, size, decoder, canvas, pool)])).to(device)
        host_transforms = [LetterboxTransform.from_array(p) for p in params.cpu().numpy()]
        out["nms_alone_batches_per_s"] = {
            "host (nms + pack_detections)": rate(lambda: pack_detections(nms(raw, spec), host_transforms, spec.max_det), 1),
            "device (nms_on_device)": rate(lambda: nms_on_device(raw, spec, params), 1),
        }
        host, on_device = pack_detections(nms(raw, spec), host_transforms, spec.max_det), nms_on_device(raw, spec, params)
        out["nms_device_vs_host"] = {name: ("identical" if np.array_equal(host[name], on_device[name]) else
                                            f"max abs diff {np.abs(host[name].astype(float) - on_device[name]).max()}")
                                     for name in host} | {"detections": int(host["num_detections"].sum())}
    out["device_letterbox_vs_cpu_letterbox_grey_levels"] = letterbox_vs_cpu(decoder, canvas, size)
    out["small_batches_beside_a_compiled_forward"] = hybrid_graphs_check(net, device, half, batch, size, padded)

    images = [decode(r) for r in rows]
    predictor_detections(model, images[0], spec, half=half, device=0)  # warm

    def predictor_batch():
        model.predict(images, imgsz=size, conf=spec.conf, iou=spec.iou, max_det=spec.max_det, rect=False, device=0,
                      verbose=False, batch=batch, **({"quantize": 16} if half else {}))

    out["ultralytics_predictor_images_per_s"] = rate(predictor_batch, batch)
    return out


def letterbox_vs_cpu(decoder, canvas, size: int) -> dict[str, dict]:
    """The GPU path's letterbox (``decoder``, one row at a time into ``canvas``) against the CPU letterbox, in grey
    levels, on bus.jpg and zidane.jpg and on bus.jpg as a phone stores it with each EXIF orientation."""
    import numpy as np
    from ultralytics.utils import ASSETS

    from python_models.client.bad_inputs import EXIF_ORIENTATIONS, exif_rotated
    from python_models.runtime import gpu_decode
    from python_models.runtime.decode import decode
    from python_models.runtime.letterbox import letterbox_padded

    encoded = {name: (Path(ASSETS) / name).read_bytes() for name in PARITY_IMAGES}
    encoded |= {f"bus.jpg, EXIF orientation {o}": exif_rotated(encoded["bus.jpg"], o) for o in EXIF_ORIENTATIONS}
    compared = {}
    for name, data in encoded.items():
        row = np.frombuffer(data, np.uint8)
        gpu_decode.letterbox_rows([row], size, decoder, canvas[:1])
        diff = np.abs(canvas[0].cpu().numpy().astype(np.int16) - letterbox_padded(decode(row), size)[0])
        compared[name] = {"max_abs_diff": int(diff.max()), "mean_abs_diff": round(float(diff.mean()), 3),
                          "share_differing": round(float((diff > 0).mean()), 3)}
    return compared


def where_time_goes(step, calls: int = 30, rows: int = 15) -> dict:
    """``step`` called ``calls`` times under cProfile (the host's Python, functions by their own time) and then under
    torch.profiler (operators, and on a GPU its kernels, by their own time): the two tables that place a stage's cost
    between Python, the CPU side of torch and the GPU."""
    import cProfile
    import io
    import pstats

    import torch
    from torch.profiler import ProfilerActivity, profile

    python = cProfile.Profile()
    python.enable()
    for _ in range(calls):
        step()
    python.disable()
    text = io.StringIO()
    pstats.Stats(python, stream=text).sort_stats("tottime").print_stats(rows)
    on_gpu = torch.cuda.is_available()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])) as traced:
        for _ in range(calls):
            step()
        if on_gpu:
            torch.cuda.synchronize()
    table = traced.key_averages().table(sort_by="self_device_time_total" if on_gpu else "self_cpu_time_total",
                                        row_limit=rows)
    return {"calls": calls, "python_by_own_time": [line for line in text.getvalue().splitlines() if line.strip()],
            "torch_by_own_time": table.splitlines()}


def preprocess_stages(batches=(32, 64), seconds: float = 3.0) -> dict:
    """Preprocessing alone, in one process (no server, no network), on bus.jpg and zidane.jpg alternating: per GPU
    decoder (``decode gpu``: nvJPEG through torchvision; ``decode nvimgcodec``: the hardware decoder, where
    nvImageCodec is installed), the decode alone and decode + letterbox into the network's batch as Track A and
    the B/C step run it (``gpu_decode.letterbox_rows``, with a pool of 8 threads), also with Pillow's header parser
    for every JPEG as before ``jpeg_header``; the header check alone, and the truncation rule it replaced alone;
    each decoder's letterbox against the CPU one, phone photos included; and where decode + letterbox spends its
    time at the largest batch (``where_time_goes``)."""
    from concurrent.futures import ThreadPoolExecutor
    from unittest import mock

    import numpy as np
    import torch
    from ultralytics.utils import ASSETS

    from python_models.runtime import gpu_decode
    from python_models.runtime.decode import payload, probe

    device = torch.device("cuda:0")
    torch.cuda.set_device(device)
    size = c.DEFAULT_IMAGE_SIZE
    encoded = [(Path(ASSETS) / name).read_bytes() for name in PARITY_IMAGES]

    def rate(step, images: int) -> float:
        return images_per_s(step, images, device, seconds)

    rows = [np.frombuffer(encoded[i % 2], np.uint8) for i in range(max(batches))]
    pillow_only = mock.patch("python_models.runtime.decode.jpeg_header", lambda buf: None)
    with pillow_only:
        pillow_probe = rate(lambda: [probe(r) for r in rows], len(rows))
    out: dict = {"images": list(PARITY_IMAGES), "seconds_per_figure": seconds, "header_check_images_per_s": {
        "decode.probe, one thread": rate(lambda: [probe(r) for r in rows], len(rows)),
        "decode.probe with Pillow's parser for every JPEG (before jpeg_header), one thread": pillow_probe,
        "the truncation rule it replaced alone (rfind of the last scan header), one thread": rate(
            lambda: [(lambda b: b.rfind(b"\xff\xd9") < b.rfind(b"\xff\xda"))(payload(r).tobytes()) for r in rows],
            len(rows))}}
    decoders: dict = {}
    for mode in ("gpu", "nvimgcodec"):
        try:
            decoders[mode] = gpu_decode.gpu_decoder(mode, device)
        except Exception as exc:  # nvImageCodec not installed, or no hardware decoder: said in the report
            out[f"decode {mode}"] = f"{type(exc).__name__}: {exc}"[:400]
    canvas = torch.empty((max(batches), size, size, 3), dtype=torch.uint8, device=device)
    with ThreadPoolExecutor(8) as pool:
        for mode, decoder in decoders.items():
            figures: dict = {}
            for batch in batches:
                tensors = [torch.from_numpy(r.copy()) for r in rows[:batch]]
                figures[f"batch {batch}: decode alone"] = rate(lambda: decoder(tensors), batch)
                figures[f"batch {batch}: decode + letterbox"] = rate(
                    lambda: gpu_decode.letterbox_rows(rows[:batch], size, decoder, canvas, pool), batch)
                with pillow_only:
                    figures[f"batch {batch}: decode + letterbox, Pillow's header parser (before)"] = rate(
                        lambda: gpu_decode.letterbox_rows(rows[:batch], size, decoder, canvas, pool), batch)
            parity = letterbox_vs_cpu(decoder, canvas, size)
            batch = max(batches)
            profiled = where_time_goes(lambda: gpu_decode.letterbox_rows(rows[:batch], size, decoder, canvas, pool))
            out[f"decode {mode}"] = {"images_per_s": figures, "letterbox_vs_cpu_grey_levels": parity,
                                     f"where_time_goes_batch_{batch}": profiled}
    return out


def hybrid_graphs_check(net, device, half: bool, batch: int, size: int, padded) -> dict:
    """``GraphedForward`` given a compiled forward (one batch size) keeps the eager network's graphs for the small
    batches they run faster: checked here with a stand-in for the compiled forward (the eager network padded to
    ``batch`` rows, as ``compiled_forward`` pads), so that it needs no build: which sizes it kept, their replay
    times, and every batch size's output against the eager network's graphs."""
    import torch

    from python_models.contract import PAD_VALUE
    from python_models.runtime import network

    def stand_in(rows_in):
        rows = len(rows_in)
        if rows < batch:
            rows_in = torch.cat([rows_in, rows_in.new_full((batch - rows, *rows_in.shape[1:]), PAD_VALUE)])
        return network.forward_padded(net, rows_in, device, half)[:rows]

    stand_in.batch_sizes = [batch]
    hybrid = network.GraphedForward(net, device, half, batch, size, stand_in)
    eager = network.GraphedForward(net, device, half, batch, size)
    worst = 0.0
    for rows in range(1, batch + 1):
        worst = max(worst, float((hybrid(padded[:rows]).float() - eager(padded[:rows]).float()).abs().max()))
    return {"graphs": hybrid.describe(), "max_abs_diff_vs_eager_graphs_any_batch_size": round(worst, 4)}


DALI_LOOPS = {
    # name: (CPU threads, prefetch queue depth)
    "synchronous, 4 threads": (4, 1),
    "pipelined, 8 threads, prefetch 2": (8, 2),
}
"""How the in-process loop drives the pipeline: one batch at a time, or with the next batch already queued so
DALI's CPU stage (header parsing, geometry) overlaps the GPU stage, as a serving backend can."""


def dali_benchmark(batches=(1, 32, 128), seconds: float = 3.0) -> dict:
    """The project's DALI graph with the mixed (nvJPEG) decoder, in-process; images/s and letterbox parity."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return {"skipped": "nvidia-dali is not installed here"}
    import numpy as np
    from ultralytics.utils import ASSETS

    from python_models.runtime.dali_letterbox import letterbox_pipeline
    from python_models.runtime.decode import decode
    from python_models.runtime.letterbox import letterbox_rgb

    out = {}
    for name in PARITY_IMAGES:
        encoded = np.frombuffer((Path(ASSETS) / name).read_bytes(), np.uint8)
        expected, transform = letterbox_rgb(decode(encoded), c.DEFAULT_IMAGE_SIZE)
        for batch in batches:
            for loop, (threads, depth) in DALI_LOOPS.items():
                key = f"{name} batch {batch}, {loop}"
                try:
                    pipe = letterbox_pipeline(size=c.DEFAULT_IMAGE_SIZE, batch_size=batch, num_threads=threads, device_id=0,
                                              decoder_device="mixed", prefetch_queue_depth=depth)
                    pipe.build()
                    for _ in range(depth):  # an external source must hold a batch for every queued iteration
                        pipe.feed_input(c.INPUT_IMAGES, [encoded] * batch)

                    def run():
                        outputs = pipe.run()
                        pipe.feed_input(c.INPUT_IMAGES, [encoded] * batch)
                        return outputs

                    images, transforms = run()
                    first = images.as_cpu().as_array()[0]
                    count, start = 0, time.perf_counter()
                    while time.perf_counter() - start < seconds:
                        run()
                        count += batch
                    out[key] = {
                        "images_per_s": round(count / (time.perf_counter() - start), 1),
                        "mean_abs_diff_grey_levels": round(float(np.abs(first.astype(np.int16) - expected).mean()), 4),
                        "transform_identical": bool((transforms.as_cpu().as_array()[0] == transform.to_array()).all()),
                    }
                    del pipe
                except Exception as exc:  # one loop style failing must not lose the others' figures
                    out[key] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return out


def versions(grpc_url: str) -> dict:
    import torch
    import tritonclient.grpc as grpcclient

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    metadata = grpcclient.InferenceServerClient(grpc_url).get_server_metadata()
    return {"gpu": smi, "torch": torch.__version__, "cuda": torch.version.cuda,
            "triton": metadata.version, "cpu_cores": os.cpu_count(), "platform": platform.platform()}


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole host, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Utilisation:
    """While a level runs: the host's CPU busy share, and each GPU's utilisation and memory (nvidia-smi, once a
    second). Tells which side bounds a level: GPUs below ~90% with the CPU near 100% is a host-bound level."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s, self.samples, self.stop = every_s, [], threading.Event()

    def _sample(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
            except OSError:  # no nvidia-smi: CPU figures only
                return
            rows = [line.split(",") for line in out.strip().splitlines() if line.count(",") == 2]
            self.samples.append({int(i): (float(u), float(m)) for i, u, m in rows})

    def __enter__(self) -> "Utilisation":
        self.cpu_start = _cpu_times()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        self.thread.join()
        busy, total = (b - a for a, b in zip(self.cpu_start, _cpu_times()))
        gpus = sorted({g for sample in self.samples for g in sample})
        self.result = {
            "host_cpu_busy_percent": round(100 * busy / max(total, 1), 1),
            "gpu_util_percent": {g: round(sum(s[g][0] for s in self.samples if g in s)
                                          / max(1, sum(g in s for s in self.samples)), 1) for g in gpus},
            "gpu_memory_used_mib": {g: max(s[g][1] for s in self.samples if g in s) for g in gpus},
        }


def _taskset(cores: list[int] | None, command: list[str]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cores)), *command] if cores else command


def detect_run(out: Path, grpc_url: str, concurrency: int, images: int, client_cores: list[int] | None,
               references: dict, tolerance, spec, processes: int = 0) -> dict:
    """``yolo11-triton detect`` over ``images`` files (hard links to the parity images) at ``concurrency``, and every
    answer checked against the single-request answer for its image: under load, on every GPU, nothing differs."""
    from ultralytics.utils import ASSETS

    from python_models.client.bulk import detections_of_line, read_jsonl
    from python_models.client.matching import differences

    folder = out / "detect_images"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(images):
        name = PARITY_IMAGES[index % len(PARITY_IMAGES)]
        target = folder / f"{index:06d}_{name}"
        if not target.exists():
            os.link(Path(ASSETS) / name, target)
    jsonl = out / "detect.jsonl"
    jsonl.unlink(missing_ok=True)
    command = _taskset(client_cores, [sys.executable, "-m", "python_models", "detect", str(folder), "--model",
                                      repo.PYTORCH, "--grpc-url", grpc_url, "--out", str(jsonl), "--concurrency",
                                      str(concurrency), "--processes", str(processes), "--quiet"])
    result = subprocess.run(command, capture_output=True, text=True)
    summaries = [json.loads(line)["summary"] for line in result.stdout.splitlines() if line.startswith('{"summary"')]
    if not summaries:
        return {"error": f"detect.py exited {result.returncode}: {result.stderr[-1500:]}"}
    lines = read_jsonl(jsonl)
    wrong = []
    for line in lines:
        base = line["image"].rsplit("_", 1)[-1]
        problems = (["error: " + line["error"]] if "error" in line else
                    differences(detections_of_line(line), references[base], spec, *tolerance))
        if problems and len(wrong) < 5:
            wrong.append(f"{line['image']}: {'; '.join(problems)[:300]}")
        elif problems:
            wrong.append("")
    shutil.rmtree(folder, ignore_errors=True)
    jsonl.unlink(missing_ok=True)
    return {**summaries[0], "concurrency": concurrency, "lines": len(lines), "distinct": len({l["image"] for l in lines}),
            "answers_differing_from_single_request": len(wrong), "examples": [w for w in wrong if w]}


def serve_track_a(args, out: Path, console, concurrencies: list[int], gpus: int | None = None,
                  server_cores: list[int] | None = None, client_cores: list[int] | None = None,
                  detect_images: int = 0) -> dict:
    """Serve Track A (on the first ``gpus`` GPUs, or every one), check parity, sweep perf_analyzer over
    ``concurrencies`` and, with ``detect_images``, drive the busiest level again with yolo11-triton detect."""
    out.mkdir(parents=True, exist_ok=True)
    check_stub_environment(args.stub_python_bin)
    repository, untrained, package = layout(out, args.weights, args.precision, args.instances, args.decode_threads,
                                            not args.no_cuda_graphs, gpus, args.decode, args.network, args.nms,
                                            getattr(args, "caches_from", None))
    install = find_triton()
    ports = Ports(args.grpc_port - 1, args.grpc_port, args.grpc_port + 1)
    grpc_url, metrics_url = f"127.0.0.1:{ports.grpc}", f"http://127.0.0.1:{ports.metrics}/metrics"
    log = open(out / "server.log", "wb")
    started = time.monotonic()
    # Each instance reports where the time inside execute went, every 200 executions, in the server log.
    # An empty inductor cache: a compiled network must load from the caches the build saved beside model.pt alone.
    inductor_cache = out / "inductor_cache_of_the_server"
    shutil.rmtree(inductor_cache, ignore_errors=True)
    env = {**server_env(install, args.stub_python_bin), "YOLO11_TRITON_TIMING": "1",
           "TORCHINDUCTOR_CACHE_DIR": str(inductor_cache)}
    server = subprocess.Popen(server_command(install, repository, ports), env=env,
                              stdout=log, stderr=subprocess.STDOUT,
                              preexec_fn=(lambda: os.sched_setaffinity(0, server_cores)) if server_cores else None)
    runs, not_measured, utilisation, detect, streams = [], {}, {}, {}, {}
    try:
        if not wait_ready(f"http://127.0.0.1:{ports.http}/v2/health/ready", server, timeout_s=600):
            raise SystemExit(f"tritonserver did not become ready: see {out / 'server.log'}")
        meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **versions(grpc_url),
                "weights": args.weights + (" (untrained)" if untrained else ""), "precision": args.precision,
                "instances": args.instances, "gpus_serving": gpus or "all", "decode_threads": args.decode_threads,
                "server_cores": len(server_cores) if server_cores else os.cpu_count(),
                "client_cores": len(client_cores) if client_cores else "shared with the server",
                "load_s": round(time.monotonic() - started, 1),
                "cuda_graphs": not args.no_cuda_graphs, "decode": args.decode, "network": args.network,
                "nms": args.nms,
                "compiled_package": package, "instance_load_s": instance_load_times(out / "server.log"),
                "command": shlex.join(["python3", *sys.argv])}
        console.print(meta)
        checked = parity(grpc_url, track_a_version(out) / "model.pt", args.precision, args.decode)
        console.print({"parity": checked})
        from ultralytics.utils import ASSETS

        input_data = pa.write_input_data([Path(ASSETS) / n for n in PARITY_IMAGES], out / "perf_input.json")
        binary = pa.find_binary()
        for concurrency in concurrencies:
            csv_path = out / "perf" / f"c{concurrency}.csv"
            cmd = _taskset(client_cores, pa.command(binary, repo.PYTORCH, grpc_url, input_data, concurrency, csv_path,
                                                    args.measurement_ms, max_trials=8, stability_percent=30))
            try:
                with Utilisation() as used:
                    runs.append(measure(cmd, csv_path, repo.PYTORCH, metrics_url, [repo.PYTORCH]))
            except PerfAnalyzerFailed as exc:
                # Past the queue bound the server refuses requests by design, and perf_analyzer stops at the first.
                not_measured[concurrency] = str(exc).splitlines()[-1][:300]
                console.print(f"perf_analyzer failed at {concurrency}: {not_measured[concurrency]}")
                continue
            utilisation[concurrency] = used.result
            perf = runs[-1].perf
            m = runs[-1].server[repo.PYTORCH]
            console.print(f"c={concurrency}: {perf.throughput:.0f} img/s, p50 {perf.p50_ms:.0f} ms, p99 {perf.p99_ms:.0f} ms, "
                          f"batch {m.avg_batch:.1f}, queue {m.queue_ms:.1f} / input {m.compute_input_ms:.1f} / "
                          f"infer {m.compute_infer_ms:.1f} / output {m.compute_output_ms:.1f} ms, {used.result}")
        if detect_images and runs:
            from python_models.client import infer_grpc, served_spec, unpack_detections
            from python_models.client.matching import tolerance
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(grpc_url)
            spec = served_spec(client, repo.PYTORCH)
            references = {n: unpack_detections(infer_grpc(client, repo.PYTORCH, [(Path(ASSETS) / n).read_bytes()]))[0]
                          for n in PARITY_IMAGES}
            best = max(runs, key=lambda r: r.perf.throughput)
            with Utilisation() as used:
                detect = detect_run(out, grpc_url, best.perf.concurrency, detect_images, client_cores, references,
                                    tolerance(repo.PYTORCH, args.precision, against="predictor", decode=args.decode), spec,
                                    args.detect_processes)
            detect.update(perf_analyzer_images_per_s=round(best.perf.throughput, 1), utilisation=used.result)
            if "images_per_s" in detect:
                detect["ratio_to_perf_analyzer"] = round(detect["images_per_s"] / best.perf.throughput, 3)
            console.print({"detect.py": detect})
        if getattr(args, "streams", None):
            from python_models.cli.bench_streams import run_levels
            from python_models.client.stream_load import camera_frames

            with Utilisation() as used:
                streams = run_levels(grpc_url, metrics_url, [int(v) for v in args.streams.split(",")],
                                     args.stream_fps, args.stream_seconds, camera_frames(), log=console.print)
            streams = {"levels": streams, "utilisation": used.result}
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    timing = execute_timing(out / "server.log")
    paths = write_report(out, runs, meta, extra={"parity": checked, "not_measured": not_measured,
                                                 "utilisation": utilisation, "detect": detect, "execute_timing": timing,
                                                 "streams": streams})
    with open(paths["report.md"], "a") as md:
        md.write("\n## Where the time goes (Triton, per request, ms), and what was busy\n\n"
                 "| concurrency | queue | compute input | compute infer | compute output | host CPU busy % | GPU util % |\n"
                 "|---|---|---|---|---|---|---|\n")
        for run in runs:
            m, used = run.server[repo.PYTORCH], utilisation.get(run.perf.concurrency, {})
            gpu = ", ".join(f"{g}: {u:.0f}" for g, u in used.get("gpu_util_percent", {}).items())
            md.write(f"| {run.perf.concurrency} | {m.queue_ms:.1f} | {m.compute_input_ms:.1f} | {m.compute_infer_ms:.1f} "
                     f"| {m.compute_output_ms:.1f} | {used.get('host_cpu_busy_percent', '')} | {gpu} |\n")
        for concurrency, reason in not_measured.items():
            md.write(f"\nNot measured at concurrency {concurrency}: perf_analyzer said `{reason}`\n")
        if timing:
            md.write("\n## Inside execute (each instance's last report of its last 200 executions)\n\n```\n"
                     + "\n".join(timing) + "\n```\n")
        md.write(f"\n## Parity with the Ultralytics predictor ({args.precision}, same GPU)\n\n```\n{json.dumps(checked, indent=2)}\n```\n")
        if detect:
            md.write(f"\n## yolo11-triton detect at the busiest level\n\n```\n{json.dumps(detect, indent=2)}\n```\n")
        if streams:
            from python_models.cli.bench_streams import level_table

            md.write(f"\n## Live streams tracked at once ({c.TRACK} over {repo.PYTORCH}, 720p cameras at "
                     f"{args.stream_fps:g} fps)\n\n{level_table(streams['levels'])}\nHost and GPUs while the levels "
                     f"ran: `{json.dumps(streams['utilisation'])}`\n")
    return {"meta": meta, "runs": runs, "parity": checked, "not_measured": not_measured, "utilisation": utilisation,
            "detect": detect, "paths": paths}


def scaling_table(results: dict[int, dict]) -> tuple[list[dict], str]:
    """Per GPU count: the level with the most images/s, and images/s on N / (N x images/s on the fewest)."""
    base_n = min(results)
    base = max(r.perf.throughput for r in results[base_n]["runs"]) / base_n if results[base_n]["runs"] else 0
    rows = []
    for n, result in sorted(results.items()):
        if not result["runs"]:
            rows.append({"gpus": n, "error": "no level measured"})
            continue
        best = max(result["runs"], key=lambda r: r.perf.throughput)
        used = result["utilisation"].get(best.perf.concurrency, {})
        detect = result["detect"]
        rows.append({"gpus": n, "concurrency": best.perf.concurrency, "images_per_s": round(best.perf.throughput, 1),
                     "p50_ms": round(best.perf.p50_ms, 1), "p99_ms": round(best.perf.p99_ms, 1),
                     "avg_batch": round(best.server[repo.PYTORCH].avg_batch, 1),
                     "efficiency": round(best.perf.throughput / (n * base), 3) if base else None,
                     "host_cpu_busy_percent": used.get("host_cpu_busy_percent"),
                     "gpu_util_percent": used.get("gpu_util_percent"),
                     "server_cores": result["meta"]["server_cores"], "load_s": result["meta"]["load_s"],
                     "parity": result["parity"]["passed"],
                     "detect_py_images_per_s": detect.get("images_per_s"),
                     "detect_py_differing_answers": detect.get("answers_differing_from_single_request")})
    lines = ["| GPUs | server cores | best concurrency | images/s | p50 ms | p99 ms | avg batch | efficiency | host CPU busy % "
             "| GPU util % | yolo11-triton detect images/s (answers differing) | load s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['gpus']} | {row['error']} |" + " |" * 10)
            continue
        gpu = ", ".join(f"{g}: {u:.0f}" for g, u in (row["gpu_util_percent"] or {}).items())
        lines.append(f"| {row['gpus']} | {row['server_cores']} | {row['concurrency']} | {row['images_per_s']:,.0f} | "
                     f"{row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {row['avg_batch']} | {row['efficiency']} | "
                     f"{row['host_cpu_busy_percent']} | {gpu} | {row['detect_py_images_per_s']} "
                     f"({row['detect_py_differing_answers']}) | {row['load_s']} |")
    return rows, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="yolo11s.pt", help="a .pt, or a .yaml for an untrained network of that size")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--instances", type=int, default=2, help="yolo11_pytorch instances on each GPU")
    parser.add_argument("--decode-threads", type=int, default=0, help="decode threads per instance (0: threads.decode_threads, 8 for 4 instances on 16 cores)")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="run the forward eagerly (parameter cuda_graphs false)")
    parser.add_argument("--decode", choices=repo.TRACK_A_DECODES, default=repo.PYTORCH_DECODE, help="Track A's parameter decode")
    parser.add_argument("--nms", choices=c.TRACK_A_NMS, default=repo.PYTORCH_NMS, help="Track A's parameter nms")
    parser.add_argument("--compare-before", nargs="?", const="network=eager", metavar="SETTINGS",
                        help="serve Track A first with these of its parameters changed (comma-separated KEY=VALUE "
                        f"over {', '.join(BEFORE_SETTINGS)}; alone: network=eager, the baseline of the compiled "
                        "network's latency at low load; instances=4 against --instances 6 shares one compiled build) "
                        "at the same levels, then as configured; writes compare.md")
    parser.add_argument("--network", choices=repo.TRACK_A_NETWORKS, default=repo.PYTORCH_NETWORK,
                        help="Track A's parameter network (compiled: its caches are built first, or kept if up to date)")
    parser.add_argument("--build-only", action="store_true", help="lay out the repository and build the compiled "
                        "network's caches into --out, then stop (a later run with the same --out reuses them)")
    parser.add_argument("--pipeline-seconds", type=float, default=4.0, help="per in-process measurement (0: skip)")
    parser.add_argument("--concurrency", default="1,16,64,128,256", help="levels; with --gpus, per GPU")
    parser.add_argument("--measurement-ms", type=int, default=5000)
    parser.add_argument("--stub-python-bin", type=Path, help="bin/ of the environment the Python backend stub runs in")
    parser.add_argument("--grpc-port", type=int, default=18001)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / time.strftime("gpu-%Y%m%d-%H%M%S"))
    parser.add_argument("--skip-dali", action="store_true")
    parser.add_argument("--dali-only", action="store_true", help="only step 4 (no server): writes dali.json")
    parser.add_argument("--preprocess-only", action="store_true", help="only the preprocessing stage in one process, "
                        "both GPU decoders (no server, no network): writes preprocess_stages.json")
    parser.add_argument("--gpus", help="GPU counts to serve on, one after another, e.g. 1,2,4,8: the scaling report")
    parser.add_argument("--cores-per-gpu", type=int, default=0, help="with --gpus: the server runs on this many cores "
                        "per GPU and the clients on the rest (0: everything shares every core)")
    parser.add_argument("--detect-images", type=int, default=0, help="drive the busiest level again with "
                        "yolo11-triton detect over this many images, every answer checked")
    parser.add_argument("--streams", help="after the sweep, live 720p cameras tracked at once by yolo11_track over "
                        "Track A, levels e.g. 16,32,64 (yolo11-triton bench streams)")
    parser.add_argument("--stream-fps", type=float, default=30.0)
    parser.add_argument("--stream-seconds", type=float, default=15.0)
    parser.add_argument("--detect-processes", type=int, default=0, help="yolo11-triton detect --processes (0: its default)")
    args = parser.parse_args(argv)
    if args.preprocess_only:
        args.out.mkdir(parents=True, exist_ok=True)
        stages = preprocess_stages(seconds=args.pipeline_seconds or 3.0)
        (args.out / "preprocess_stages.json").write_text(json.dumps(stages, indent=2) + "\n")
        print(json.dumps(stages, indent=2))
        return 0
    if args.dali_only:
        args.out.mkdir(parents=True, exist_ok=True)
        dali = dali_benchmark()
        (args.out / "dali.json").write_text(json.dumps(dali, indent=2) + "\n")
        print(json.dumps(dali, indent=2))
        return 0

    from rich.console import Console

    console = Console()
    if args.build_only:
        started = time.perf_counter()
        _, untrained, record = layout(args.out, args.weights, args.precision, args.instances, args.decode_threads,
                                      not args.no_cuda_graphs, None, args.decode, args.network)
        console.print({"package": record, "untrained": untrained, "seconds": round(time.perf_counter() - started, 1)})
        return 0
    levels = [int(x) for x in args.concurrency.split(",")]
    if args.gpus:
        return scaling(args, console, levels)
    in_process = {}
    if args.pipeline_seconds:
        # First, on an idle GPU: the same work in one process (and whether the compiled network can be replayed
        # from CUDA graphs, which the server then does or, if not, is told not to, as the report says).
        _, _, package = layout(args.out, args.weights, args.precision, args.instances, args.decode_threads,
                               not args.no_cuda_graphs, None, args.decode, args.network)
        version = track_a_version(args.out)
        in_process = gpu_pipeline(version / "model.pt", args.precision, repo.PYTORCH_MAX_BATCH, args.pipeline_seconds,
                                  version if package else None)
        in_process["preprocess_stages"] = preprocess_stages(seconds=args.pipeline_seconds)
        if isinstance(in_process["forward_images_per_s"].get("compiled, CUDA graph"), str):
            args.no_cuda_graphs = True
        import torch

        torch.cuda.empty_cache()
    before = None
    if args.compare_before:
        before = serve_track_a(argparse.Namespace(**{**vars(args), **before_settings(args.compare_before),
                                                     "caches_from": args.out}),
                               args.out / "before", console, levels)
        args.caches_from = args.out / "before"
    result = serve_track_a(args, args.out, console, levels, detect_images=args.detect_images)
    if before is not None:
        (args.out / "compare.md").write_text(comparison(before, result))
        console.print((args.out / "compare.md").read_text())
    if in_process and result["runs"]:
        best = max(result["runs"], key=lambda r: r.perf.throughput)
        served = in_process["pipeline_images_per_s"][
            f"decode + letterbox + forward + NMS + pack on the {args.nms} (nms {args.nms})"]
        in_process["served_over_in_process"] = round(best.perf.throughput / served, 3)
    console.print({"in_process": in_process})
    dali = {} if args.skip_dali else dali_benchmark()
    console.print({"dali": dali})
    report_json = result["paths"]["report.json"]
    report_json.write_text(json.dumps({**json.loads(report_json.read_text()), "dali": dali, "in_process": in_process},
                                      indent=2) + "\n")
    with open(result["paths"]["report.md"], "a") as md:
        md.write(f"\n## The same GPU work in one process (no server)\n\n```\n{json.dumps(in_process, indent=2)}\n```\n")
        md.write(f"\n## DALI pipeline, mixed decoder, in-process\n\n```\n{json.dumps(dali, indent=2)}\n```\n")
    console.print(result["paths"]["report.md"].read_text())
    return 0 if result["parity"]["passed"] else 1


BEFORE_SETTINGS = {"decode": repo.TRACK_A_DECODES, "network": repo.TRACK_A_NETWORKS, "nms": c.TRACK_A_NMS,
                   "instances": tuple(str(n) for n in range(1, 17))}


def before_settings(text: str) -> dict[str, str]:
    """``--compare-before``'s ``KEY=VALUE,...`` as Track A's parameters; SystemExit naming what is wrong."""
    settings = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        if key not in BEFORE_SETTINGS or value not in BEFORE_SETTINGS[key]:
            raise SystemExit(f"--compare-before {text!r}: {item!r} is not KEY=VALUE with KEY one of "
                             f"{', '.join(BEFORE_SETTINGS)} and VALUE one of its values "
                             f"({'; '.join(f'{k}: {v}' for k, v in BEFORE_SETTINGS.items())})")
        settings[key] = int(value) if key == "instances" else value
    if not settings:
        raise SystemExit(f"--compare-before {text!r}: no KEY=VALUE given")
    return settings


def comparison(before: dict, after: dict) -> str:
    """Per concurrency: images/s and p50/p99 served before (the previous defaults) and after, from one run."""
    rows = {r.perf.concurrency: [r, None] for r in before["runs"]}
    for r in after["runs"]:
        rows.setdefault(r.perf.concurrency, [None, None])[1] = r
    settings = lambda meta: ", ".join(f"{k} {meta[k]}" for k in BEFORE_SETTINGS)  # noqa: E731
    lines = [f"# Track A before and after, one server each, same GPU, same run\n\nbefore: {settings(before['meta'])}; "
             f"after: {settings(after['meta'])}; {after['meta']['gpu']}\n\ncommand: `{after['meta']['command']}`\n",
             "| concurrency | before images/s | p50 ms | p99 ms | after images/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for concurrency, pair in sorted(rows.items()):
        cells = [f"{r.perf.throughput:,.0f} | {r.perf.p50_ms:.1f} | {r.perf.p99_ms:.1f}" if r else "not measured | |"
                 for r in pair]
        lines.append(f"| {concurrency} | {cells[0]} | {cells[1]} |")
    lines.append(f"\nparity before: {before['parity']['passed']}, after: {after['parity']['passed']}")
    return "\n".join(lines) + "\n"


def scaling(args, console, per_gpu_levels: list[int]) -> int:
    counts = sorted({int(x) for x in args.gpus.split(",")})
    from python_models.serving.triton import gpu_count

    have, cores = gpu_count(), sorted(os.sched_getaffinity(0))
    if counts[-1] > have:
        raise SystemExit(f"--gpus {args.gpus}: this host has {have} GPU(s)")
    if args.cores_per_gpu and args.cores_per_gpu * counts[-1] >= len(cores):
        raise SystemExit(f"--cores-per-gpu {args.cores_per_gpu} x {counts[-1]} GPUs leaves none of the "
                         f"{len(cores)} cores for the clients")
    results = {}
    for n in counts:
        server_cores = cores[: args.cores_per_gpu * n] if args.cores_per_gpu else None
        client_cores = cores[args.cores_per_gpu * n:] if args.cores_per_gpu else None
        console.rule(f"Track A on {n} GPU(s)" + (f", server on {len(server_cores)} cores" if server_cores else ""))
        results[n] = serve_track_a(args, args.out / f"gpus{n}", console, [c * n for c in per_gpu_levels], n,
                                   server_cores, client_cores, args.detect_images)
    rows, table = scaling_table(results)
    meta = {k: v for k, v in results[counts[0]]["meta"].items() if k not in ("gpus_serving", "server_cores", "load_s")}
    (args.out / "scaling.json").write_text(json.dumps({"meta": meta, "cores_per_gpu": args.cores_per_gpu,
                                                       "rows": rows}, indent=2) + "\n")
    (args.out / "scaling.md").write_text(f"# Track A on 1 to {counts[-1]} GPUs\n\n{meta['gpu']}; {meta['cpu_cores']} "
                                         f"cores; command: `{meta['command']}`\n\n{table}")
    console.print(table)
    return 0 if all(r["parity"]["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
