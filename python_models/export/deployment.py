"""The NGC release production runs, pinned once: docker compose, the image check, the engine builder and the
CPU profile's DALI read it here.

Chosen so that what CI proves is what production runs: the Triton DALI backend of this
release serialises and runs ``dali.py`` with its own DALI (``DALI_VERSION`` of
triton-inference-server/dali_backend, branch r26.05), and that exact version is a real
wheel the CPU profile installs (``pyproject.toml``; a test compares). Releases up to 26.01
carry DALI 1.51.2, which has no installable wheel; 26.06 moves to TensorRT 11.

Versions of the release (Triton release notes and the image; re-check on the GPU host,
``yolo11-triton check image`` prints what the built image really holds):
"""

from __future__ import annotations

import os

TRITON_RELEASE = "26.05"
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
TRITON_SERVER_VERSION = "2.69.0"
DALI_VERSION = "2.1.0"
"""DALI inside this release's DALI backend; the CPU twins run exactly this version."""
CUDA_VERSION = "13.2.1"
MIN_DRIVER = "580"
"""CUDA 13.x runs on drivers of the R580 branch or newer (CUDA minor-version compatibility)."""
TENSORRT_LINE = "10.16"
"""TensorRT of the release as third parties report it; not pinned in code: plans are built by the image's own
``trtexec`` and checked against the image's ``libnvinfer``, all four components (``engine_build``)."""
PYTHON_VERSION = "3.12"
UBUNTU_VERSION = "24.04"
TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
"""Where the server image keeps TensorRT's builder (Triton's own QA builds its plans with it there)."""


def gpu_count() -> int:
    """GPUs visible to this process (``CUDA_VISIBLE_DEVICES``, else nvidia-smi's list; 1 when it cannot be asked)."""
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "all"):
        return max(1, len([d for d in visible.split(",") if d.strip()]))
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 1
    return max(1, sum(1 for line in out.splitlines() if line.startswith("GPU ")))
