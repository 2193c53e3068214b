"""The serving image production runs, pinned once: docker compose, the engine builder and the docs read it here."""

from __future__ import annotations

TRITON_RELEASE = "25.10"
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
SERVING_TENSORRT = "10.13.3"
"""TensorRT inside ``TRITON_IMAGE`` (NGC 25.10: CUDA 13.0.2, TensorRT 10.13.3). A plan runs only on the
TensorRT version that built it, so the builder refuses any other (major.minor.patch)."""
