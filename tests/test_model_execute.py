"""The Python models' ``execute`` in this process (``pb_utils``, a stand-in for Triton's module): several requests in
one execution each get their own answer, in the order they came, a bad one failing alone.

Triton hands a model the requests its batcher gathered and sends the i-th response to the i-th request's client: a
model that answers them in another order hands clients each other's detections, and only a batch of several requests
shows it.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import cv2
import numpy as np
from conftest import StandInError
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from ultralytics.utils import ASSETS

from python_models import contract as c
from python_models.client import pack_images
from python_models.export import repository as repo
from python_models.export import shapes_dataset as shapes
from python_models.export.cpu_configs import cpu_profile_config
from python_models.runtime.letterbox import LetterboxTransform

ROOT = Path(__file__).resolve().parents[1]
SHAPES_WEIGHTS = ROOT / "tests" / "assets" / "shapes_yolo11.pt"


def model_args(config: mc.ModelConfig, tmp_path: Path | None = None) -> dict:
    """What Triton passes a Python model's ``initialize`` for one KIND_CPU instance of ``config``."""
    return {"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
            "model_instance_kind": "CPU", "model_instance_device_id": "0",
            "model_instance_name": f"{config.name}_0_0", "model_repository": str(tmp_path or ""), "model_version": "1"}


def served(definition: repo.ModelDefinition) -> mc.ModelConfig:
    """The config the CPU profile serves for ``definition``."""
    return cpu_profile_config(definition) or definition.config


def load(entry: str, config: mc.ModelConfig, tmp_path: Path | None = None):
    model = importlib.import_module(entry).TritonPythonModel()
    model.initialize(model_args(config, tmp_path))
    return model


def assert_each_answer_is_its_own(batched: list, alone: list, exact: bool = True) -> None:
    """Response i of the batch is what request i gets when it is executed alone."""
    assert len(batched) == len(alone)
    for i, (got, own) in enumerate(zip(batched, alone)):
        assert got.has_error() == own.has_error(), f"request {i}"
        if own.has_error():
            assert (got.error().code(), got.error().message()) == (own.error().code(), own.error().message()), i
            continue
        got, own = got.arrays(), own.arrays()
        assert got.keys() == own.keys(), f"request {i}"
        for name, value in own.items():
            assert got[name].shape == value.shape, f"request {i}: {name} {got[name].shape}, alone {value.shape}"
            if exact:
                np.testing.assert_array_equal(got[name], value, err_msg=f"request {i}: {name}")
            else:
                np.testing.assert_allclose(got[name], value, atol=2e-3, err_msg=f"request {i}: {name}")


def copied(responses: list) -> list:
    """``responses`` holding copies of their arrays: a model may reuse its output buffers in its next execution
    (``adapter.BatchBuffer``), as Triton allows once it has copied them out."""
    return [type(r)([type(t)(t.name(), np.array(t.as_numpy())) for t in r.output_tensors()], r.error())
            for r in responses]


def execute_together_and_alone(model, requests: list[dict]) -> tuple[list, list]:
    together = copied(model.execute(requests))
    return together, [copied(model.execute([request]))[0] for request in requests]


def test_track_b_nms_step_answers_each_request_of_a_batch_its_own_detections_in_order(pb_utils):
    spec = repo.default_spec()
    model = load(repo.RUNTIME + "nms_model", served(repo.definitions_by_name(spec)[repo.NMS]))
    rng = np.random.default_rng(3)

    def raw(images: int) -> np.ndarray:
        """Head output with a few strong boxes per image, each image its own."""
        out = np.zeros((images, 4 + spec.num_classes, spec.num_anchors), np.float32)
        out[:, 4:] = rng.uniform(0, 0.1, out[:, 4:].shape)
        for b in range(images):
            for k in range(int(rng.integers(2, 9))):
                anchor = int(rng.integers(spec.num_anchors))
                out[b, 0:4, anchor] = [*rng.uniform(100, 540, 2), *rng.uniform(20, 80, 2)]
                out[b, 4 + int(rng.integers(spec.num_classes)), anchor] = rng.uniform(0.3, 0.95)
        return out

    def transforms(images: int) -> np.ndarray:
        return np.stack([LetterboxTransform(*rng.uniform([0.3, 0.3, 0, 0, 200, 200], [1.2, 1.2, 80, 80, 1900, 1900])
                                            ).to_array() for _ in range(images)]).astype(np.float32)

    requests = [{c.RAW_PREDICTIONS: raw(n), c.LETTERBOX_TRANSFORM: transforms(n)} for n in (1, 2, 1, 3)]
    together, alone = execute_together_and_alone(model, requests)
    counts = [a.arrays()[c.OUTPUT_NUM_DETECTIONS].ravel().tolist() for a in alone]
    assert len({tuple(n) for n in counts}) == len(requests), f"the requests' answers must differ: {counts}"
    assert_each_answer_is_its_own(together, alone)


def _images() -> dict[str, bytes]:
    bus, zidane = (ASSETS / "bus.jpg").read_bytes(), (ASSETS / "zidane.jpg").read_bytes()
    png = cv2.imencode(".png", cv2.resize(cv2.imread(str(ASSETS / "bus.jpg")), (300, 400)))[1].tobytes()
    return {"bus": bus, "zidane": zidane, "png": png}


def test_tracks_b_and_c_preprocessing_step_answers_each_request_its_own_rows_in_order(pb_utils):
    spec = repo.default_spec()
    model = load(repo.RUNTIME + "preprocess_model", served(repo.preprocess_definition(spec, "cpu")))
    images = _images()
    rows = [[images["bus"]], [images["zidane"], images["png"]], [images["bus"], b"not an image at all"],
            [images["png"]]]
    together, alone = execute_together_and_alone(model, [{c.INPUT_IMAGES: pack_images(r)} for r in rows])
    assert together[2].error().code() == StandInError.INVALID_ARG and "images[1]" in together[2].error().message()
    assert_each_answer_is_its_own(together, alone)


def test_track_a_answers_each_request_of_a_batch_its_own_detections_in_order(pb_utils, tmp_path):
    """The trained test detector, on held-out shapes images of different sizes: requests of one, two and one images
    and a bad one, in one execution."""
    from ultralytics import YOLO

    from python_models.export.weights import model_spec

    spec = model_spec(YOLO(str(SHAPES_WEIGHTS)), imgsz=shapes.IMAGE_SIZE)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.pt").symlink_to(SHAPES_WEIGHTS)
    model = load(repo.RUNTIME + "pytorch_model", served(repo.definitions_by_name(spec)[repo.PYTORCH]), tmp_path)
    photos = [data for data, _, _ in shapes.test_set(4)]
    rows = [[photos[0]], [photos[1], photos[2]], [b"\xff\xd8 a truncated JPEG"], [photos[3]]]
    together, alone = execute_together_and_alone(model, [{c.INPUT_IMAGES: pack_images(r)} for r in rows])
    counts = [a.arrays()[c.OUTPUT_NUM_DETECTIONS].ravel().tolist() for a in alone if not a.has_error()]
    assert all(n > 0 for request in counts for n in request), f"the test images must have detections: {counts}"
    assert together[2].error().code() == StandInError.INVALID_ARG
    # A batch of four through the network on the CPU may differ from one image alone in the last bits.
    assert_each_answer_is_its_own(together, alone, exact=False)

