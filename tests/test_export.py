"""The export tool writes what the server serves and says plainly when it cannot build engines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from python_models import contract as c
from python_models.engine_build import NOT_HERE, tensorrt_available
from python_models.export import raw_onnx, read_manifest, weights_pt

ROOT = Path(__file__).resolve().parents[1]


def test_raw_onnx_has_dynamic_batch_and_the_contract_shapes(server):
    model = onnx.load(str(raw_onnx(server.artifacts)))
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == c.ONNX_INPUT and out.name == c.ONNX_RAW_OUTPUT
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1] == 3, in_dims
    assert isinstance(out_dims[0], str) and out_dims[1] == 4 + c.NUM_CLASSES, out_dims


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed: engines are built")
def test_export_without_tensorrt_says_so_in_one_line(server):
    manifest = read_manifest(server.artifacts)
    assert manifest is not None and manifest.untrained and weights_pt(server.artifacts).exists()
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "export.py"), "--weights", manifest.weights, "--artifacts", str(server.artifacts)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(NOT_HERE) == 1
