"""Serialise every Track D tier's dali.py as Triton's DALI backend does, run the result, compare with the CPU letterbox.

    yolo11-triton check dali [--repository artifacts] [--cpu] [--out dali_check.json]

At load time the DALI backend runs ``invoke_autoserialize`` on the version folder's dali.py with the DALI
first on its PYTHONPATH (dali_backend: src/model_provider/model_provider.h). This does the same with this
environment's DALI, deserialises the pipeline, runs it on the sample images (bus.jpg, zidane.jpg, a PNG, a
tall JPEG, a grayscale JPEG, bus.jpg zero-padded, and stored with each EXIF orientation 2-8) with the mixed decoder of
dali.py, and compares images and transforms
with python_models.runtime.letterbox. Exit 1, naming the tier and the image, on any difference beyond one grey level
on average. On the GPU host: docker compose run --rm export yolo11-triton check dali (it needs a GPU:
a mixed-decoder pipeline cannot be built without one). --cpu checks the same path with the CPU decoder
instead of the tiers' files, anywhere.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from python_models.cli.paths import ROOT  # noqa: E402

from python_models import contract as c  # noqa: E402
from python_models.export import repository as repo  # noqa: E402
from python_models.export import repository_files  # noqa: E402
from python_models.export.artifacts import ARTIFACTS_DIR  # noqa: E402
from python_models.client.bad_inputs import EXIF_ORIENTATIONS, damaged_but_decodable, damaged_scans  # noqa: E402
from python_models.client.bad_inputs import decoder_only_damage  # noqa: E402
from python_models.client.bad_inputs import exif_rotated  # noqa: E402

MAX_MEAN_DIFF = 2 / 255
"""Mean absolute difference allowed against OpenCV's letterbox: DALI's decoders differ by up to a grey level."""


def sample_images(repository: Path) -> dict[str, bytes]:
    """The ultralytics sample photos and forms of them; without ultralytics (a bare DALI environment), the bus.jpg
    the DALI leaves warm up on."""
    import cv2

    try:
        from ultralytics.utils import ASSETS

        originals = {name: (Path(ASSETS) / name).read_bytes() for name in ("bus.jpg", "zidane.jpg")}
    except ImportError:
        warmup = repository / repo.dali_preprocess_name(c.DALI_TIERS[0]) / "warmup" / repo.WARMUP_IMAGE
        originals = {"bus.jpg": warmup.read_bytes()}
    bus = cv2.imdecode(np.frombuffer(originals["bus.jpg"], np.uint8), cv2.IMREAD_COLOR)
    wide = cv2.imdecode(np.frombuffer(originals.get("zidane.jpg", originals["bus.jpg"]), np.uint8), cv2.IMREAD_COLOR)
    # Phone photos: stored sideways (or mirrored) with the EXIF tag that turns them upright.
    rotated = {f"bus_exif_{k}.jpg": exif_rotated(originals["bus.jpg"], k) for k in EXIF_ORIENTATIONS if k != 1}
    return {
        **originals,
        "png_640x480.png": cv2.imencode(".png", cv2.resize(wide, (640, 480), interpolation=cv2.INTER_AREA))[1].tobytes(),
        "bus_480x1280.jpg": cv2.imencode(".jpg", cv2.resize(bus, (480, 1280), interpolation=cv2.INTER_AREA))[1].tobytes(),
        "bus_gray.jpg": cv2.imencode(".jpg", cv2.cvtColor(bus, cv2.COLOR_BGR2GRAY))[1].tobytes(),
        # As the rows of one request arrive, and as Track D's guard sends a batch: zero-padded to the longest.
        "bus_zero_padded.jpg": originals["bus.jpg"] + bytes(65536),
        **rotated,
    }


def throughput(serialized: Path, batch: int, device_id: int | None, data: bytes, seconds: float) -> float:
    """Images per second of the deserialised pipeline on full batches of one image, fed one batch at a time."""
    from nvidia.dali import Pipeline

    pipe = Pipeline.deserialize(filename=str(serialized), batch_size=batch, num_threads=4, device_id=device_id)
    pipe.build()
    rows = [np.frombuffer(data, np.uint8)] * batch
    pipe.feed_input(c.INPUT_IMAGES, rows)
    pipe.run()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        pipe.feed_input(c.INPUT_IMAGES, rows)
        pipe.run()  # returns once the batch's outputs are ready; copying them to the host would be timed too
        done += batch
    return done / (time.perf_counter() - start)


def serialise_dali_py(dali_py: Path, target: Path) -> None:
    """What the backend does at load time: import dali.py as a module and autoserialise its pipeline."""
    from nvidia.dali._utils.autoserialize import invoke_autoserialize

    spec = importlib.util.spec_from_file_location("autoserialize_mod", dali_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    invoke_autoserialize(module, str(target))


def compare(serialized: Path, batch: int, device_id: int | None, images: dict[str, bytes], size: int) -> dict[str, dict]:
    """Run the serialised pipeline on ``images`` (one batch) and compare with the CPU letterbox."""
    from nvidia.dali import Pipeline

    from python_models.runtime.decode import decode
    from python_models.runtime.letterbox import letterbox_rgb

    pipe = Pipeline.deserialize(filename=str(serialized), batch_size=batch, num_threads=4, device_id=device_id)
    pipe.build()
    names = list(images)
    outputs, transforms = [], []
    for start in range(0, len(names), batch):  # the tier's batch size bounds what one run takes
        pipe.feed_input(c.INPUT_IMAGES, [np.frombuffer(images[n], np.uint8) for n in names[start : start + batch]])
        images_out, transforms_out = (o.as_cpu() if hasattr(o, "as_cpu") else o for o in pipe.run())
        outputs += [np.asarray(image) for image in images_out]
        transforms += [np.asarray(transform) for transform in transforms_out]
    results = {}
    for index, name in enumerate(names):
        expected, transform = letterbox_rgb(decode(images[name]), size)
        got = outputs[index]
        shape_ok = got.shape == expected.shape and got.dtype == expected.dtype
        mean = float(np.abs(got.astype(np.int16) - expected.astype(np.int16)).mean()) / 255 if shape_ok else float("inf")
        same_transform = bool(np.allclose(transforms[index], transform.to_array(), atol=1e-4))
        results[name] = {"shape": list(got.shape), "mean_abs_diff_grey_levels": round(mean * 255, 3),
                         "transform_equal": same_transform, "passed": shape_ok and mean <= MAX_MEAN_DIFF and same_transform}
    return results


def orientation_cost(images: dict[str, bytes], batch: int, device_id: int | None, size: int, seconds: float) -> dict:
    """Images per second of the served graph (EXIF-aware decoder and peek) and of the same graph on DALI's legacy
    decoder, which ignores the tag, on full batches of an upright JPEG and of the same photo stored sideways
    (orientation 6), alternating the two graphs: what turning photos upright costs per image."""
    from python_models.runtime.dali_letterbox import letterbox_pipeline

    decoder = "cpu" if device_id is None else "mixed"
    cases = {"bus.jpg (upright)": images["bus.jpg"], "bus.jpg stored sideways (EXIF 6)": images["bus_exif_6.jpg"]}
    pipes = {}
    for upright in (True, False):
        pipe = letterbox_pipeline(size=size, batch_size=batch, num_threads=4, device_id=device_id,
                                  decoder_device=decoder, upright=upright, prefetch_queue_depth=1)
        pipe.build()
        pipes["served (EXIF-aware)" if upright else "legacy decoder (ignores EXIF)"] = pipe
    rates: dict[str, dict[str, list[float]]] = {case: {graph: [] for graph in pipes} for case in cases}
    for _ in range(3):  # alternate, so drift of the machine falls on both graphs alike
        for case, data in cases.items():
            rows = [np.frombuffer(data, np.uint8)] * batch
            for graph, pipe in pipes.items():
                pipe.feed_input(c.INPUT_IMAGES, rows)
                pipe.run()  # warm
                done, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds / 3:
                    pipe.feed_input(c.INPUT_IMAGES, rows)
                    pipe.run()
                    done += batch
                rates[case][graph].append(done / (time.perf_counter() - start))
    report = {}
    for case, by_graph in rates.items():
        best = {graph: max(values) for graph, values in by_graph.items()}
        served, legacy = best["served (EXIF-aware)"], best["legacy decoder (ignores EXIF)"]
        report[case] = {"batch": batch, **{f"images_per_s {g}": round(v, 1) for g, v in best.items()},
                        "cost_ms_per_image": round(1e3 / served - 1e3 / legacy, 4),
                        "cost_percent": round(100 * (legacy / served - 1), 1)}
    return report


def damaged_batches(images: dict[str, bytes], batch: int, device_id: int | None, size: int) -> dict:
    """For each kind of damaged JPEG: does the served graph decode a batch holding it and ``batch - 1`` good photos,
    or fail the whole batch (which the guard then answers on the CPU)?"""
    from python_models.runtime.dali_letterbox import letterbox_pipeline

    kinds = {**damaged_scans(images["bus.jpg"]), **damaged_but_decodable(images["bus.jpg"]),
             **decoder_only_damage(images["bus.jpg"], images["png_640x480.png"])}
    report = {}
    for kind, data in kinds.items():
        pipe = letterbox_pipeline(size=size, batch_size=batch, num_threads=4, device_id=device_id,
                                  decoder_device="cpu" if device_id is None else "mixed", prefetch_queue_depth=1)
        pipe.build()
        rows = [np.frombuffer(images["bus.jpg"], np.uint8)] * (batch - 1) + [np.frombuffer(data, np.uint8)]
        try:
            pipe.feed_input(c.INPUT_IMAGES, rows)
            pipe.run()
            report[kind] = "decoded"
        except Exception as exc:  # noqa: BLE001 - DALI's own words are the finding
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            named = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.endswith("encountered:")]
            report[kind] = "failed the batch: " + (named or lines)[0][:300]
    return report


def track_a_on_damage(images: dict[str, bytes]) -> dict:
    """For each kind of damaged image: what the header check says, and whether torchvision's nvJPEG (Track A's GPU
    decoder) decodes it alone (DALI's verdict on each is ``damaged_batches``')."""
    import torch
    import torchvision.io

    from python_models.runtime.decode import InvalidImageError, probe

    kinds = {**damaged_scans(images["bus.jpg"]), **damaged_but_decodable(images["bus.jpg"]),
             **decoder_only_damage(images["bus.jpg"], images["png_640x480.png"])}
    report = {}
    for kind, data in kinds.items():
        try:
            probe(data)
            header = "passes"
        except InvalidImageError as exc:
            header = f"refused: {exc}"
        try:
            torchvision.io.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), device="cuda")
            torch.cuda.synchronize()
            nvjpeg = "decoded"
        except Exception as exc:  # noqa: BLE001 - its words are the finding
            nvjpeg = f"refused: {str(exc).splitlines()[0][:160]}"
        report[kind] = {"header_check": header, "nvjpeg_alone": nvjpeg}
    return report


def against_track_a(images: dict[str, bytes], weights: Path, size: int) -> dict:
    """DALI's mixed decoder in the served graph against Track A's nvJPEG path (``gpu_decode``) on the same JPEGs:
    the letterboxed pixels, whether a row's DALI pixels depend on its batch-mates, and the detections of one FP16
    network (Track A's, in this process) on each decoder's pixels: the part of Track D's distance from Track A that
    the decoders alone make (the engine's FP16 kernels add theirs)."""
    import torch
    from ultralytics import YOLO

    from python_models.client import Detections, unpack_detections
    from python_models.client.matching import box_iou, pairs
    from python_models.export.weights import model_spec
    from python_models.runtime.dali_letterbox import letterbox_pipeline
    from python_models.runtime.gpu_decode import letterbox_rows, nvjpeg_decoder
    from python_models.runtime.network import forward_padded, load_network
    from python_models.runtime.nms import nms, pack_detections

    device = torch.device("cuda", 0)
    jpegs = {name: np.frombuffer(data, np.uint8) for name, data in images.items() if data[:3] == b"\xff\xd8\xff"}
    names = list(jpegs)
    batch = 8
    pipe = letterbox_pipeline(size=size, batch_size=batch, num_threads=4, device_id=0, decoder_device="mixed",
                              prefetch_queue_depth=1)
    pipe.build()

    def dali(rows: list[np.ndarray]) -> list[np.ndarray]:
        pipe.feed_input(c.INPUT_IMAGES, rows)
        out, _ = pipe.run()
        return [np.asarray(image) for image in out.as_cpu()]

    by_dali: dict[str, np.ndarray] = {}
    for start in range(0, len(names), batch):
        by_dali.update(zip(names[start : start + batch], dali([jpegs[n] for n in names[start : start + batch]])))
    # The same photo at every position of a batch, beside other photos, against it alone.
    alone = dali([jpegs["bus.jpg"]])[0]
    mates = [jpegs[n] for n in names if n != "bus.jpg"][: batch - 1]
    position_diff = 0
    for position in range(batch):
        rows = mates[:position] + [jpegs["bus.jpg"]] + mates[position:]
        got = dali(rows[:batch])[min(position, len(rows[:batch]) - 1)]
        position_diff = max(position_diff, int(np.abs(got.astype(np.int16) - alone.astype(np.int16)).max()))
    canvas = torch.empty((len(names), size, size, 3), dtype=torch.uint8, device=device)
    transforms = letterbox_rows([jpegs[n] for n in names], size, nvjpeg_decoder(device), canvas)
    by_nvjpeg = dict(zip(names, canvas.cpu().numpy()))  # BGR
    model = YOLO(str(weights))
    spec = model_spec(model, imgsz=size)
    net = load_network(weights, device, half=True)

    def detect(bgr: np.ndarray, transform) -> Detections:
        raw = forward_padded(net, bgr[None], device, half=True)
        return unpack_detections(pack_detections(nms(raw, spec), [transform], spec.max_det))[0]

    rows = {}
    for name, transform in zip(names, transforms):
        dali_bgr = np.ascontiguousarray(by_dali[name][..., ::-1])
        diff = np.abs(dali_bgr.astype(np.int16) - by_nvjpeg[name].astype(np.int16))
        ref, got = detect(by_nvjpeg[name], transform), detect(dali_bgr, transform)
        paired = pairs(ref, got, 0.5, 1.0)
        scores = [abs(float(ref.scores[i]) - float(got.scores[j])) for i, j in paired.items()]
        ious = [float(box_iou(ref.boxes[i : i + 1], got.boxes[j : j + 1])[0, 0]) for i, j in paired.items()]
        floor = spec.conf + 0.05  # near the threshold a detection may exist on one side only
        unpaired = (sum(1 for i in range(len(ref)) if i not in paired and ref.scores[i] >= floor)
                    + sum(1 for j in range(len(got)) if j not in set(paired.values()) and got.scores[j] >= floor))
        rows[name] = {"pixels_mean_abs_diff": round(float(diff.mean()), 3), "pixels_max_abs_diff": int(diff.max()),
                      "pixels_share_over_4": round(float((diff > 4).mean()), 4), "detections_track_a": len(ref),
                      "detections_dali": len(got), "max_score_diff": round(max(scores, default=0.0), 4),
                      "min_iou": round(min(ious, default=1.0), 4), "unpaired_above_conf_plus_0.05": unpaired}
    return {"weights": str(weights), "batch": batch, "dali_max_abs_diff_across_batch_positions": position_diff,
            "images": rows,
            "max_score_diff": max(r["max_score_diff"] for r in rows.values()),
            "min_iou": min(r["min_iou"] for r in rows.values()),
            "max_unpaired_share": max(r["unpaired_above_conf_plus_0.05"] / max(r["detections_track_a"], 1)
                                      for r in rows.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=ROOT / ARTIFACTS_DIR)
    parser.add_argument("--cpu", action="store_true", help="serialise the same graph with the CPU decoder instead")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--seconds", type=float, default=0, help="also time each tier's pipeline on full batches "
                        "of bus.jpg for this long (one batch at a time, as a single backend instance runs)")
    parser.add_argument("--orientation-cost", type=float, default=0, metavar="SECONDS",
                        help="also time the served graph against the legacy decoder (which ignores EXIF) on upright "
                             "and sideways-stored photos, this long in all")
    parser.add_argument("--damaged", action="store_true",
                        help="also report whether a batch holding each kind of damaged JPEG decodes or fails whole")
    parser.add_argument("--against-track-a", type=Path, metavar="WEIGHTS",
                        help="also compare the served graph's pixels, and one FP16 network's detections on them, with "
                             "Track A's nvJPEG path on the same JPEGs, and give the header check's and nvJPEG's verdict "
                             "on each damaged image (with --damaged, DALI's too; a GPU and torchvision's nvJPEG; "
                             "WEIGHTS: the served model.pt)")
    args = parser.parse_args(argv)
    import nvidia.dali

    images = sample_images(args.repository)
    report = {"dali": nvidia.dali.__version__, "decoder": "cpu" if args.cpu else "mixed", "tiers": {}}
    with tempfile.TemporaryDirectory() as folder:
        for tier in c.DALI_TIERS:
            target = Path(folder) / f"{tier.name}.dali"
            # The size the export generated this tier for, as its config states it.
            config = repository_files.parse_pbtxt((args.repository / repo.dali_preprocess_name(tier) / "config.pbtxt").read_text())
            (size,) = {o.dims[0] for o in config.output if o.name == c.LETTERBOXED_IMAGES}
            try:
                if args.cpu:
                    from python_models.runtime.dali_letterbox import letterbox_pipeline

                    pipe = letterbox_pipeline(size=size, batch_size=tier.max_batch_size, num_threads=4, device_id=None,
                                              decoder_device="cpu")
                    pipe.serialize(filename=str(target))
                else:
                    serialise_dali_py(args.repository / repo.dali_preprocess_name(tier) / "1" / "dali.py", target)
                results = compare(target, tier.max_batch_size, None if args.cpu else 0, images, size)
                if args.seconds:
                    rate = throughput(target, tier.max_batch_size, None if args.cpu else 0, images["bus.jpg"], args.seconds)
                    report.setdefault("images_per_s_bus_jpg", {})[tier.name] = round(rate, 1)
                    print(f"{tier.name:9s} {tier.max_batch_size} x bus.jpg per batch: {rate:,.0f} images/s", flush=True)
            except Exception as exc:  # noqa: BLE001 - any failure is the finding, with DALI's words
                results = {"*": {"passed": False, "error": f"{type(exc).__name__}: {str(exc).strip()[:1500]}"}}
            report["tiers"][tier.name] = results
            for name, result in results.items():
                print(f"{tier.name:9s} {name:20s} {'ok  ' if result['passed'] else 'FAIL'} "
                      f"{json.dumps({k: v for k, v in result.items() if k != 'passed'})}", flush=True)
    device_id = None if args.cpu else 0
    if args.orientation_cost:
        report["orientation_cost"] = orientation_cost(images, 64, device_id, size, args.orientation_cost)
        for case, row in report["orientation_cost"].items():
            print(f"orientation {case}: {json.dumps(row)}", flush=True)
    if args.damaged:
        report["damaged"] = damaged_batches(images, 8, device_id, size)
        for kind, outcome in report["damaged"].items():
            print(f"damaged {kind:40s} {outcome}", flush=True)
    if args.against_track_a:
        report["against_track_a"] = against_track_a(images, args.against_track_a, size)
        report["track_a_on_damage"] = track_a_on_damage(images)
        for key, value in report["against_track_a"].items():
            print(f"against Track A: {key}: {json.dumps(value)}", flush=True)
        for kind, verdicts in report["track_a_on_damage"].items():
            print(f"damage {kind:55s} {json.dumps(verdicts)}", flush=True)
    passed = all(r["passed"] for tier in report["tiers"].values() for r in tier.values())
    report["passed"] = passed
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"DALI {report['dali']}, {report['decoder']} decoder: {'PASSED' if passed else 'FAILED'}", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
