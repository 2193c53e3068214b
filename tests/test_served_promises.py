"""What the docs promise about every model's queue and batches and about the default thresholds, checked where a client
meets them: the configs the export writes and the CPU profile serves, as Triton reads them, and the answers of a model
loaded with them. The numbers come from the docs' sentences, never from the constants that make them: a constant
changed alone (or a config regenerated with it) fails here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from python_models import contract as c
from python_models.export import repository as repo
from python_models.export import repository_files
from python_models.export.cpu_configs import cpu_profile_config
from python_models.runtime.network import graph_batch_sizes

ROOT = Path(__file__).resolve().parents[1]


def documented(page: str, pattern: str) -> tuple[str, ...]:
    """The groups of ``pattern`` in ``docs/page`` (line breaks read as spaces); the test fails when the page no longer
    says it."""
    text = " ".join((ROOT / "docs" / page).read_text().split())
    found = re.search(pattern, text)
    assert found, f"docs/{page} no longer says /{pattern}/: a test states its promise"
    return found.groups()


def served_configs(gpus: int) -> dict[str, tuple[mc.ModelConfig, mc.ModelConfig]]:
    """Per model, the config the export writes for a serving host of ``gpus`` GPUs (``write_repository``, read back
    as Triton reads it) and the one the CPU profile serves instead (as ``build_cpu_repository`` writes it, from the
    configs of one GPU whatever the export's)."""
    spec = repo.default_spec()
    cpu = {d.name: cpu_profile_config(d) or d.config for d in repo.model_definitions(spec)}
    return {d.name: tuple(repository_files.parse_pbtxt(repository_files.to_pbtxt(config))
                          for config in (d.config, cpu[d.name]))
            for d in repo.model_definitions(spec, gpus=gpus)}


def on_gpus(config: mc.ModelConfig) -> bool:
    return any(group.kind == mc.ModelInstanceGroup.KIND_GPU for group in config.instance_group)


@pytest.mark.parametrize("gpus", [1, 2])
def test_every_model_queues_at_most_the_documented_batches_then_refuses(gpus):
    """docs/production.md: at most N x its max batch queued (times the GPUs for a model placed on them), a 5 s
    timeout, then REJECT, so an overloaded model answers UNAVAILABLE at once."""
    (batches,) = documented("production.md", r"at most (\d+) x its max batch queued \(times the serving host's GPUs "
                                             r"for a model placed on the GPUs, or feeding one\), 5 s queue timeout")
    assert int(batches) == 4, "the documented depth: four of its largest batches"
    bounded = 0
    for name, (production, cpu) in served_configs(gpus).items():
        if not production.HasField("dynamic_batching"):
            continue  # ensembles, the tracking model and the DALI leaves (the model in front of each bounds it)
        # Track D's guard queues for its DALI leaf, on every GPU
        feeds_gpus = on_gpus(production) or "dali_model" in production.parameters
        for config, hosts_gpus in ((production, gpus if feeds_gpus else 1), (cpu, 1)):
            policy = config.dynamic_batching.default_queue_policy
            assert policy.max_queue_size == int(batches) * config.max_batch_size * hosts_gpus, (name, gpus)
            assert policy.timeout_action == mc.ModelQueuePolicy.REJECT, name
            assert policy.default_timeout_microseconds == 5_000_000 and policy.allow_timeout_override, name
        bounded += 1
    assert bounded >= 10, "every leaf of every track"


def test_every_model_prefers_the_documented_batch_sizes_which_track_a_runs_unpadded():
    """docs/production.md: batches of 4, 8, 16, 32, 64 and 128 images, those up to the model's max batch; Track A's
    CUDA graphs are captured at each of them."""
    (sizes,) = documented("production.md", r"prefers batches of ((?:\d+, )+\d+ and \d+) images \(those up to its "
                                           r"max batch\)")
    preferred = [int(s) for s in re.findall(r"\d+", sizes)]
    assert preferred == [4, 8, 16, 32, 64, 128]
    for name, (production, cpu) in served_configs(1).items():
        if not production.HasField("dynamic_batching"):
            continue
        for config in (production, cpu):
            expected = [size for size in preferred if size <= config.max_batch_size]
            assert list(config.dynamic_batching.preferred_batch_size) == expected, name
    track_a = served_configs(1)[repo.PYTORCH][0]
    assert set(track_a.dynamic_batching.preferred_batch_size) <= set(graph_batch_sizes(track_a.max_batch_size))


def test_an_export_without_threshold_flags_serves_the_documented_defaults_and_answers_with_them(pb_utils, monkeypatch):
    """docs/serving-your-own-model.md: --imgsz, --conf, --iou, --max-det default to 640, 0.25, 0.45 and 100. An export
    given none states them in every public model's config, and Track B's NMS step, loaded with its config, applies
    them: a box scoring just under the threshold is dropped, one just over it kept; boxes overlapping just over the
    IoU threshold are one detection, just under it two; at most max_det rows."""
    from python_models.export.artifacts import ExportOptions

    values = documented("serving-your-own-model.md", r"`--imgsz`, `--conf`, `--iou`, `--max-det` \(default "
                                                     r"(\d+), ([\d.]+), ([\d.]+), (\d+);")
    imgsz, conf, iou, max_det = int(values[0]), float(values[1]), float(values[2]), int(values[3])
    assert (imgsz, conf, iou, max_det) == (640, 0.25, 0.45, 100)
    for variable in ("YOLO11_IMGSZ", "YOLO11_CONF", "YOLO11_IOU", "YOLO11_MAX_DET"):
        monkeypatch.delenv(variable, raising=False)
    parser = argparse.ArgumentParser()
    ExportOptions.add_arguments(parser)
    options = ExportOptions.from_args(parser.parse_args([]))
    assert (options.imgsz, options.conf, options.iou, options.max_det) == (imgsz, conf, iou, max_det)

    from python_models.export.weights import model_spec
    from ultralytics import YOLO

    exported = model_spec(YOLO(str(ROOT / "tests" / "assets" / "shapes_yolo11.pt")), options.imgsz, options.conf,
                          options.iou, options.max_det)  # as export_artifacts makes it
    served = served_configs(1)
    for public in c.PUBLIC_MODELS:
        spec = c.ModelSpec.from_config(json_format.MessageToDict(served[public][1], preserving_proto_field_name=True))
        assert (spec.imgsz, spec.conf, spec.iou, spec.max_det) == (imgsz, conf, iou, max_det), public
    nms_config = cpu_profile_config(repo.definitions_by_name(exported)[repo.NMS]) or \
        repo.definitions_by_name(exported)[repo.NMS].config
    step = importlib.import_module(repo.RUNTIME + "nms_model").TritonPythonModel()
    step.initialize({"model_config": json.dumps(json_format.MessageToDict(nms_config,
                                                                          preserving_proto_field_name=True))})

    def answer(boxes: list[tuple[float, float, float, float, float]]) -> list[float]:
        """The scores Track B's NMS step answers for head-output boxes (x1, y1, x2, y2 letterboxed, score)."""
        raw = np.zeros((1, 4 + exported.num_classes, exported.num_anchors), np.float32)
        for anchor, (x1, y1, x2, y2, score) in enumerate(boxes):
            raw[0, :4, anchor] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
            raw[0, 4, anchor] = score
        identity = np.array([[1, 1, 0, 0, imgsz, imgsz]], np.float32)
        (response,) = step.execute([{c.RAW_PREDICTIONS: raw, c.LETTERBOX_TRANSFORM: identity}])
        arrays = response.arrays()
        return arrays[c.OUTPUT_SCORES][0, : arrays[c.OUTPUT_NUM_DETECTIONS][0, 0]].tolist()

    assert answer([(10, 10, 50, 50, conf + 0.01), (100, 100, 150, 150, conf - 0.01)]) == [pytest.approx(conf + 0.01)]

    def overlapping(ratio: float) -> list[tuple[float, float, float, float, float]]:
        """Two 100x100 boxes side by side whose IoU is ``ratio``: shifted by 100 (1 - r) / (1 + r)."""
        shift = 100 * (1 - ratio) / (1 + ratio)
        return [(200, 200, 300, 300, 0.9), (200 + shift, 200, 300 + shift, 300, 0.8)]

    assert len(answer(overlapping(iou + 0.02))) == 1, "overlapping over the IoU threshold: one detection"
    assert len(answer(overlapping(iou - 0.02))) == 2, "overlapping under it: two"
    grid = [(x, y, x + 8, y + 8, 0.5 + (x + y) / 4000) for x in range(0, 600, 40) for y in range(0, 600, 40)]
    assert len(grid) > max_det and len(answer(grid)) == max_det
