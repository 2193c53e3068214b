"""Where the commands read and write by default (``artifacts/``, ``weights/``, ``reports/``, ``.triton/``)."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """``$YOLO11_TRITON_ROOT`` when set; else the checkout holding this package when it runs from one (an editable
    install, the image's copy under its WORKDIR, which ``tools/*.py`` put first on the path); else the working
    directory (a wheel installed into site-packages, run from the project's folder)."""
    if os.environ.get("YOLO11_TRITON_ROOT"):
        return Path(os.environ["YOLO11_TRITON_ROOT"]).resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "python_models").is_dir():
        return checkout
    return Path.cwd().resolve()


ROOT = project_root()
