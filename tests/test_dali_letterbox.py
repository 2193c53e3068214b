"""Track D's DALI graph letterboxes as python_models' CPU letterbox does, and each tier ships it for autoserialisation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_NAMES

from python_models import contract as c
from python_models.export import repository as repo
from python_models.client.bad_inputs import EXIF_ORIENTATIONS, exif_rotated
from python_models.runtime.dali_letterbox import letterbox_graph, letterbox_pipeline
from python_models.runtime.decode import decode
from python_models.runtime.letterbox import letterbox_rgb

ROOT = Path(__file__).resolve().parents[1]
MAX_MEAN_ABS_DIFF = 2
"""Grey levels, on average over the image: DALI's decoder and resize round differently from OpenCV's."""


def mean_abs_diff(image: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(image.astype(np.int16) - expected.astype(np.int16)).mean())


SIZE = c.DEFAULT_IMAGE_SIZE


def cpu_letterbox(encoded: list[bytes], size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    pipe = letterbox_pipeline(size=size, batch_size=len(encoded), num_threads=2, device_id=None, decoder_device="cpu")
    pipe.build()
    pipe.feed_input(c.INPUT_IMAGES, [np.frombuffer(e, np.uint8) for e in encoded])
    images, transforms = pipe.run()
    return images.as_array(), transforms.as_array()


@pytest.mark.parametrize("size", [SIZE, 320])
def test_dali_cpu_pipeline_matches_the_cpu_letterbox(samples, size):
    images, transforms = cpu_letterbox([samples[name] for name in SAMPLE_NAMES], size)
    assert images.shape == (len(SAMPLE_NAMES), size, size, 3) and images.dtype == np.uint8
    for name, image, transform in zip(SAMPLE_NAMES, images, transforms):
        expected, expected_transform = letterbox_rgb(decode(samples[name]), size)
        np.testing.assert_array_equal(transform, expected_transform.to_array(), err_msg=name)
        assert mean_abs_diff(image, expected) <= MAX_MEAN_ABS_DIFF, name
        # RGB, not BGR: the channels' means agree with the CPU letterbox's, channel by channel.
        np.testing.assert_allclose(image.mean(axis=(0, 1)), expected.mean(axis=(0, 1)), atol=1.0, err_msg=name)
        # The border is exactly the pad value wherever both agree it is border.
        assert (image[0, 0] == c.PAD_VALUE).all() or expected_transform.pad_x == expected_transform.pad_y == 0


@pytest.mark.parametrize("width,height", [(481, 1280), (1, 1), (1280, 3), (639, 641)])
def test_geometry_rounds_like_ultralytics(width, height):
    """Odd sizes, where Python's round-half-to-even decides the resized width."""
    import cv2

    rng = np.random.default_rng(width)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    encoded = cv2.imencode(".png", pixels)[1].tobytes()
    _, transforms = cpu_letterbox([encoded])
    np.testing.assert_array_equal(transforms[0], letterbox_rgb(pixels, SIZE)[1].to_array())


@pytest.mark.parametrize("orientation", EXIF_ORIENTATIONS)
def test_exif_rotated_photos_come_out_upright_as_opencv_decodes_them(samples, orientation):
    """Phones store portrait photos sideways with an EXIF tag; OpenCV, and so every other track, turns them upright.
    DALI's plain decoder ignores the tag (its docs say so) and would letterbox the sideways picture."""
    data = exif_rotated(samples["bus.jpg"], orientation)
    (image,), (transform,) = cpu_letterbox([data])
    expected, expected_transform = letterbox_rgb(decode(data), SIZE)
    np.testing.assert_array_equal(transform, expected_transform.to_array())
    assert mean_abs_diff(image, expected) <= MAX_MEAN_ABS_DIFF


def test_the_graph_rejects_an_unknown_decoder_device():
    with pytest.raises(ValueError, match="decoder_device"):
        letterbox_graph(SIZE, "gpu")


@pytest.mark.parametrize("tier", c.DALI_TIERS, ids=lambda t: t.name)
def test_each_tier_ships_one_autoserialisable_mixed_decoder_pipeline(tier):
    from nvidia.dali._utils.autoserialize import _discover_autoserialize

    path = ROOT / "model_repository" / repo.dali_preprocess_name(tier) / "1" / "dali.py"
    spec = importlib.util.spec_from_file_location(f"dali_{tier.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (pipeline,) = _discover_autoserialize(module, visited=[])  # the DALI backend demands exactly one
    assert f'letterbox_graph(size={SIZE}, decoder_device="mixed")' in path.read_text()
    config = repo.definitions_by_name(repo.default_spec())[repo.dali_preprocess_name(tier)].config
    assert config.backend == "dali" and all(i.allow_ragged_batch for i in config.input)
    assert [o.name for o in config.output] == [c.LETTERBOXED_IMAGES, c.LETTERBOX_TRANSFORM], "DALI maps outputs by order"


@pytest.mark.parametrize("tier", c.DALI_TIERS, ids=lambda t: t.name)
def test_served_dali_twin_letterboxes_as_the_cpu_letterbox(server, samples, tier):
    """The DALI leaf as the server runs it, called directly, one request of all sample images."""
    import tritonclient.grpc as grpcclient

    from python_models.client import pack_images

    rows = pack_images([samples[name] for name in SAMPLE_NAMES])
    inp = grpcclient.InferInput(c.INPUT_IMAGES, list(rows.shape), "UINT8")
    inp.set_data_from_numpy(rows)
    result = server.grpc().infer(repo.dali_preprocess_name(tier), [inp])
    images, transforms = result.as_numpy(c.LETTERBOXED_IMAGES), result.as_numpy(c.LETTERBOX_TRANSFORM)
    size = server.spec.imgsz
    assert images.dtype == np.uint8 and images.shape[1:] == (size, size, 3)
    for name, image, transform in zip(SAMPLE_NAMES, images, transforms):
        expected, expected_transform = letterbox_rgb(decode(samples[name]), size)
        np.testing.assert_array_equal(transform, expected_transform.to_array(), err_msg=name)
        assert mean_abs_diff(image, expected) <= MAX_MEAN_ABS_DIFF, name


def test_check_dali_serialises_runs_and_compares_the_graph(tmp_path):
    """yolo11-triton check dali, which a GPU host runs on the tiers' dali.py, here on the CPU decoder."""
    import json
    import subprocess
    import sys

    out = tmp_path / "dali.json"
    result = subprocess.run([sys.executable, "-m", "python_models", "check", "dali", "--cpu", "--out", str(out),
                             "--repository", str(ROOT / "model_repository")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["passed"] and set(report["tiers"]) == {t.name for t in c.DALI_TIERS}
    assert all(len(images) == 6 + len(EXIF_ORIENTATIONS) - 1 for images in report["tiers"].values())


def test_check_dalis_comparison_fires_on_a_wrong_pipeline(tmp_path):
    """A pipeline that mirrors its output is caught: the comparison can fail."""
    import importlib.util

    import nvidia.dali.fn as fn
    from nvidia.dali import pipeline_def

    from python_models.runtime.dali_letterbox import letterbox_graph

    from python_models.cli import check_dali as tool

    @pipeline_def
    def mirrored():
        images, transform = letterbox_graph(SIZE, decoder_device="cpu")
        return fn.flip(images, horizontal=1), transform

    serialized = tmp_path / "mirrored.dali"
    mirrored(batch_size=8, num_threads=2, device_id=None).serialize(filename=str(serialized))
    results = tool.compare(serialized, 8, None, tool.sample_images(ROOT / "model_repository"), SIZE)
    assert not results["bus.jpg"]["passed"] and results["bus.jpg"]["mean_abs_diff_grey_levels"] > 2
