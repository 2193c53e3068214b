"""The NGC release production runs, pinned once: docker compose, the image check, the image build's rehearsal, the
engine builder and the CPU profile's DALI read it here.

Chosen so that what CI proves is what production runs: the Triton DALI backend of this
release runs the serialised ``dali.py`` with its own DALI (``DALI_VERSION`` of
triton-inference-server/dali_backend, branch r26.05) and serialises it with the first ``python3``
on PATH (the image's virtual environment, which holds that same version), and that exact version is a real
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

DALI_PACKAGE = f"nvidia-dali-cuda{CUDA_VERSION.split('.')[0]}0"
"""dali_backend r26.05 CMakeLists.txt l.101: ``nvidia-dali-cuda${CUDAToolkit_VERSION_MAJOR}0``."""
DALI_BACKEND_WHEEL_DIR = "/opt/tritonserver/backends/dali/wheel/dali"
"""Where the release's DALI backend keeps its DALI: the ``--target`` folder below, installed to
``backends/dali/wheel`` (dali_backend r26.05 src/dali_executor/CMakeLists.txt l.57, l.92-94).
``libtriton_dali.so`` finds ``libdali`` here through its RPATH ``$ORIGIN/wheel/dali/nvidia/dali``
(src/CMakeLists.txt l.81-101), not through PYTHONPATH."""
DALI_BACKEND_PIP_INSTALL = ("pip", "install", "--extra-index-url",
                            "https://developer.download.nvidia.com/compute/redist",
                            "--target", "{target}", f"{DALI_PACKAGE}=={DALI_VERSION}")
"""How the DALI backend's build fills that folder (dali_backend r26.05 src/dali_executor/CMakeLists.txt l.42-52, the
index from CMakeLists.txt l.58, the version from its DALI_VERSION file, l.105-108): no ``--no-deps``, so DALI's
dependencies land there too, numpy unversioned (DALI 2.1.0's ``Requires-Dist: numpy``), hence numpy 2.x; and
``--target`` installs without regard to what is installed elsewhere."""

RELEASE_ENV: tuple[tuple[str, str, str], ...] = (
    ("PIP_BREAK_SYSTEM_PACKAGES", "1", "build.py l.1258"),
    ("TRITON_SERVER_VERSION", TRITON_SERVER_VERSION, "build.py l.1312"),
    ("NVIDIA_TRITON_SERVER_VERSION", TRITON_RELEASE, "build.py l.1313"),
    ("PATH", "/opt/tritonserver/bin:${PATH}", "build.py l.1316"),
    ("PYTHONPATH", f"{DALI_BACKEND_WHEEL_DIR}:$PYTHONPATH", "build.py l.1487-1490, when the dali backend is built"),
)
"""What the release's image sets that touches our Python, in order, as Dockerfile ``ENV`` values (name, value,
where: triton-inference-server/server r26.05 build.py, ``dockerfile_prepare_container_linux``). PYTHONPATH puts the
DALI backend's folder, numpy 2.x included, ahead of any virtual environment's site-packages (and, with PYTHONPATH
empty in the base image, the working directory: the trailing empty entry). Left out, as they touch no Python:
UCX_MEM_EVENTS, TF_*, TRITON_SERVER_GPU_ENABLED, TRITON_SERVER_USER, DEBIAN_FRONTEND, TCMALLOC_RELEASE_RATE,
DCGM_VERSION, NVIDIA_PRODUCT_NAME, NVIDIA_BUILD_ID, and LD_LIBRARY_PATH (HPC-X's UCC and UCX, l.1325). What the
``-py3-min`` base image sets is not in build.py; ``image_build`` assumes a plain PATH and no PYTHONPATH."""


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
