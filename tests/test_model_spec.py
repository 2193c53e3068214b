"""The exported model's spec: stated once, in the form Ultralytics' Triton client reads, and refused when impossible."""

from __future__ import annotations

import ast

import pytest

from python_models.export import repository as repo
from python_models.export import repository_files
from python_models.contract import METADATA, ModelSpec

THREE = ModelSpec(names=("helmet", "vest", "licence plate"), imgsz=320, conf=0.4, iou=0.6, max_det=20)


def test_metadata_round_trips_and_is_what_ultralytics_backends_parse():
    from ultralytics.nn.backends.base import BaseBackend

    assert ModelSpec.from_metadata(THREE.metadata()) == THREE
    meta = ast.literal_eval(THREE.metadata())  # exactly how TritonRemoteModel reads the parameter
    class Probe(BaseBackend):  # only the metadata handling is under test, not a model
        load_model = forward = None

    backend = object.__new__(Probe)
    backend.dynamic = False
    backend.apply_metadata(meta)
    assert backend.names == {0: "helmet", 1: "vest", 2: "licence plate"}
    assert backend.imgsz == [320, 320] and backend.stride == 32 and backend.task == "detect"
    assert backend.end2end is False, "the raw leaf's output still needs NMS: the client must run it"


def test_shapes_follow_the_spec():
    assert THREE.num_anchors == 40 * 40 + 20 * 20 + 10 * 10 == 2100
    assert THREE.raw_spec().dims == (7, 2100) and THREE.letterboxed_spec().dims == (320, 320, 3)
    assert [t.dims for t in THREE.public_outputs()] == [(1,), (20, 4), (20,), (20,)]
    assert repo.default_spec().num_anchors == 8400 and len(repo.default_spec().names) == 80


@pytest.mark.parametrize("changes,reason", [
    ({"imgsz": 300}, "not a positive multiple of the largest stride 32"),
    ({"imgsz": 0}, "not a positive multiple"),
    ({"names": ()}, "no class names"),
    ({"conf": 1.0}, "conf 1.0 must lie in (0, 1)"),
    ({"max_det": 0}, "max_det 0 must be at least 1"),
])
def test_an_impossible_spec_is_refused(changes, reason):
    with pytest.raises(ValueError) as error:
        ModelSpec(**{"names": THREE.names, **changes})
    assert reason in str(error.value)


def test_every_model_that_reads_the_spec_states_it_and_the_others_do_not():
    """Public models (clients), the raw leaf (Ultralytics' client), the NMS step (its thresholds); leaves that only
    need the image size read their own output dims, so nothing is stated twice where it is not read."""
    described = {d.name for d in repo.model_definitions(THREE) if METADATA in d.config.parameters}
    assert described == {*repo.SERVED_MODELS, repo.ULTRALYTICS_RAW_TRT, repo.NMS}
    for definition in repo.model_definitions(THREE):
        if definition.name in described:
            assert ModelSpec.from_metadata(definition.config.parameters[METADATA].string_value) == THREE
        for tensor in definition.config.output:
            if tensor.name == "letterboxed_images":
                assert list(tensor.dims) == [320, 320, 3], definition.name
    dali = repository_files.version_files(repo.definitions_by_name(THREE)[repo.dali_preprocess_name(repo.c.DALI_TIERS[0])])
    assert 'letterbox_graph(size=320, decoder_device="mixed")' in dali["dali.py"]
