"""Check that this image is the one the project was proven against; print what it holds; exit 1 naming what is not.

Runs as the last step of the serving image's build (docker-compose.yml), so a wrong base image fails the
build instead of the first request. Also runnable on the GPU host: docker compose run --rm export python3
yolo11-triton check image. Checks: the NGC release's Triton, its TensorRT, DALI and Python backends; trtexec and
an exact (four-component) libnvinfer version for the plans; a C compiler and the Python headers for the
compiled network's Triton kernels; the DALI the backend serialises dali.py with
equals the pinned one; numpy below 2 and everything the export needs importable, so nothing is ever
installed at run time; run as the containers' user, that HOME, its caches, the temporary folder and Ultralytics'
settings folder are writable (the build runs as root and must leave none of them root's).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import tempfile
from pathlib import Path

from python_models.cli.paths import ROOT  # noqa: E402

from python_models.export import deployment as d  # noqa: E402
from python_models.export.engine_build import find_trtexec, runtime_tensorrt_version  # noqa: E402
from python_models.serving.triton import GPU_BACKENDS, NGC_ROOT  # noqa: E402

EXPORT_MODULES = ("torch", "torchvision", "ultralytics", "onnx", "onnxslim", "onnxruntime", "cv2", "tritonclient.grpc")


def unwritable_run_time_folders() -> list[str]:
    """The folders the servers and the export write as the run-time user (HOME: Ultralytics', ONNX Runtime's,
    matplotlib's and Triton's caches; the temporary folder: inductor's cache, the DALI backend's serialised
    pipelines; YOLO_CONFIG_DIR: Ultralytics' settings) that exist but this process cannot write. Always empty
    for root, as during the build."""
    home = Path(os.environ.get("HOME") or Path.home())
    folders = [home, home / ".cache", home / ".config", home / ".triton", Path(tempfile.gettempdir())]
    if config := os.environ.get("YOLO_CONFIG_DIR"):
        folders += [Path(config), Path(config) / "Ultralytics"]
    unwritable = []
    for folder in dict.fromkeys(folders):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            owner = folder.stat()
            unwritable.append(f"{folder} (owned by {owner.st_uid}:{owner.st_gid}, mode {owner.st_mode & 0o7777:o})")
    return unwritable


def problems_and_facts() -> tuple[list[str], list[str]]:
    problems, facts = [], []
    triton = os.environ.get("TRITON_SERVER_VERSION")  # set by the NGC image (server build.py)
    facts.append(f"Triton server {triton or 'not found'} (pinned {d.TRITON_SERVER_VERSION}, NGC {d.TRITON_RELEASE})")
    if triton != d.TRITON_SERVER_VERSION:
        problems.append(f"Triton server {triton or 'unknown (no TRITON_SERVER_VERSION)'}, expected "
                        f"{d.TRITON_SERVER_VERSION} from {d.TRITON_IMAGE}")
    missing = [b for b in GPU_BACKENDS if not (NGC_ROOT / "backends" / b).is_dir()]
    if missing:
        problems.append(f"no {', '.join(missing)} backend under {NGC_ROOT / 'backends'}")
    trtexec = find_trtexec()
    facts.append(f"trtexec: {trtexec or 'not found'}")
    if trtexec is None:
        problems.append(f"no trtexec (expected at {d.TRTEXEC}): the plans could not be built in this image")
    tensorrt = runtime_tensorrt_version()
    facts.append(f"libnvinfer: {tensorrt or 'version unknown'} (release notes: {d.TENSORRT_LINE}.x)")
    if tensorrt is None:
        problems.append("the exact libnvinfer version cannot be read (no libnvinfer10/11 package, no TRT_VERSION): "
                        "plans could not be checked against it")
    try:
        import nvidia.dali as dali

        facts.append(f"DALI {dali.__version__} from {Path(dali.__file__).parent}")
        if dali.__version__ != d.DALI_VERSION:
            problems.append(f"DALI {dali.__version__} would serialise dali.py, but the CPU profile proves "
                            f"{d.DALI_VERSION} (PYTHONPATH={os.environ.get('PYTHONPATH', '')})")
    except ImportError as exc:
        problems.append(f"nvidia.dali cannot be imported ({exc}): the DALI backend could not serialise dali.py")
    import numpy

    facts.append(f"numpy {numpy.__version__}, Python {sys.version.split()[0]} at {sys.executable}")
    if int(numpy.__version__.split(".")[0]) >= 2:
        problems.append(f"numpy {numpy.__version__}: the project pins numpy < 2")
    for module in EXPORT_MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any import failure is the finding
            problems.append(f"{module} cannot be imported: {exc}")
    from python_models.export.compiled_network import jit_toolchain_problem

    if toolchain := jit_toolchain_problem():
        problems.append(f"Track A's compiled network (its default on a GPU) could not run here: {toolchain}")
    else:
        facts.append("a C compiler and the Python headers for Triton's kernel launchers (the compiled network)")
    if unwritable := unwritable_run_time_folders():
        problems.append(f"uid {os.getuid()} cannot write {'; '.join(unwritable)}: the image was built leaving "
                        "them root's: rebuild the image (docker compose build), whose check step now empties /tmp")
    if os.environ.get("YOLO_AUTOINSTALL", "").lower() not in ("false", "0"):
        problems.append("YOLO_AUTOINSTALL is not false: Ultralytics could pip-install at run time")
    return problems, facts


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    problems, facts = problems_and_facts()
    for fact in facts:
        print(f"image: {fact}", flush=True)
    for problem in problems:
        print(f"image: PROBLEM {problem}", file=sys.stderr, flush=True)
    print(f"image: {'OK' if not problems else f'{len(problems)} problem(s)'} for {d.TRITON_IMAGE}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
