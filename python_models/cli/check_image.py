"""Check that this image is the one the project was proven against; print what it holds; exit 1 naming what is not.

Runs as the last step of the serving image's build (docker-compose.yml), so a wrong base image fails the
build instead of the first request. Also runnable on the GPU host: docker compose run --rm export python3
yolo11-triton check image. Checks: the NGC release's Triton, its TensorRT, DALI and Python backends; trtexec and
an exact (four-component) libnvinfer version for the plans; a C compiler and the Python headers for the
compiled network's Triton kernels; the DALI the backend serialises dali.py with
equals the pinned one; numpy below 2, and numpy and DALI imported from the virtual environment, not from a folder
ahead of it on PYTHONPATH (the release puts its DALI backend's folder, numpy 2 included, there); everything the
export needs importable, so nothing is ever installed at run time; run as the containers' user, that HOME, its
caches, the temporary folder and Ultralytics' settings folder are writable (the build runs as root and must leave
none of them root's).

--python-only checks the Python environment alone and names the release's files it did not look for: what
``yolo11-triton check image-build`` runs off the GPU host, where those files cannot exist.
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


RELEASE_FILES = ("the TensorRT, DALI and Python backends under /opt/tritonserver/backends", "trtexec",
                 "the exact libnvinfer version", "a C compiler and the Python headers (the compiled network)")
"""What --python-only does not look for: files of the release's image, not of the Python environment."""

PROVENANCE = (("numpy", "numpy"), ("nvidia.dali", d.DALI_PACKAGE))
"""Modules whose copy ahead of the virtual environment on PYTHONPATH would replace the one the build installed
(module, its distribution)."""


def pythonpath_folders() -> list[Path]:
    """PYTHONPATH's folders (an empty entry, the working directory, is left out: it holds none of ours)."""
    return [Path(entry) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]


def provenance(module_name: str, distribution: str) -> tuple[str, str | None]:
    """Where ``module_name`` is imported from, and the problem when that is a PYTHONPATH folder ahead of the virtual
    environment: the version the build installed there (if any) is then never imported."""
    module = importlib.import_module(module_name)
    where = Path(os.path.abspath(module.__file__)).parent
    version = getattr(module, "__version__", "?")
    fact = f"{module_name} {version} imported from {where}"
    ahead = next((f for f in pythonpath_folders() if where.resolve().is_relative_to(f.resolve())), None)
    if ahead is None:
        return fact, None
    own_path = [p for p in sys.path if p and not any(Path(p).resolve().is_relative_to(f.resolve())
                                                     for f in pythonpath_folders())]
    own = next(iter(importlib.metadata.distributions(name=distribution, path=own_path)), None)
    held = f"{own.version} in {own.locate_file('')}" if own else "none (pip took the PYTHONPATH copy as installed)"
    return fact, (f"{module_name} {version} is imported from {ahead}, a PYTHONPATH folder ahead of the virtual "
                  f"environment {sys.prefix}, whose own {distribution} is {held}: the image must clear "
                  "PYTHONPATH (docker-compose.yml, ENV PYTHONPATH=)")


def release_problems_and_facts() -> tuple[list[str], list[str]]:
    """The release's files: its backends, trtexec, libnvinfer's version, the compiled network's toolchain."""
    problems, facts = [], []
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
    from python_models.export.compiled_network import jit_toolchain_problem

    if toolchain := jit_toolchain_problem():
        problems.append(f"Track A's compiled network (its default on a GPU) could not run here: {toolchain}")
    else:
        facts.append("a C compiler and the Python headers for Triton's kernel launchers (the compiled network)")
    return problems, facts


def python_problems_and_facts() -> tuple[list[str], list[str]]:
    """The Python environment: the release's Triton (its ENV), DALI, numpy, where they come from, imports, writable
    folders, no run-time installs."""
    problems, facts = [], []
    triton = os.environ.get("TRITON_SERVER_VERSION")  # set by the NGC image (server build.py)
    facts.append(f"Triton server {triton or 'not found'} (pinned {d.TRITON_SERVER_VERSION}, NGC {d.TRITON_RELEASE})")
    if triton != d.TRITON_SERVER_VERSION:
        problems.append(f"Triton server {triton or 'unknown (no TRITON_SERVER_VERSION)'}, expected "
                        f"{d.TRITON_SERVER_VERSION} from {d.TRITON_IMAGE}")
    facts.append(f"PYTHONPATH={os.environ.get('PYTHONPATH', '')!r}")
    try:
        import nvidia.dali as dali

        if dali.__version__ != d.DALI_VERSION:
            problems.append(f"DALI {dali.__version__} would serialise dali.py, but the CPU profile proves "
                            f"{d.DALI_VERSION} (PYTHONPATH={os.environ.get('PYTHONPATH', '')})")
    except ImportError as exc:
        problems.append(f"nvidia.dali cannot be imported ({exc}): the DALI backend could not serialise dali.py")
    import numpy

    facts.append(f"Python {sys.version.split()[0]} at {sys.executable}")
    if int(numpy.__version__.split(".")[0]) >= 2:
        problems.append(f"numpy {numpy.__version__}: the project pins numpy < 2")
    for module, distribution in PROVENANCE:
        try:
            fact, problem = provenance(module, distribution)
        except ImportError:  # named above
            continue
        facts.append(fact)
        problems += [problem] if problem else []
    for module in EXPORT_MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any import failure is the finding
            problems.append(f"{module} cannot be imported: {exc}")
    if unwritable := unwritable_run_time_folders():
        problems.append(f"uid {os.getuid()} cannot write {'; '.join(unwritable)}: the image was built leaving "
                        "them root's: rebuild the image (docker compose build), whose check step now empties /tmp")
    if os.environ.get("YOLO_AUTOINSTALL", "").lower() not in ("false", "0"):
        problems.append("YOLO_AUTOINSTALL is not false: Ultralytics could pip-install at run time")
    return problems, facts


def problems_and_facts(python_only: bool = False) -> tuple[list[str], list[str]]:
    """(problems, facts) of this image: the release's files unless ``python_only``, then the Python environment."""
    problems, facts = ([], []) if python_only else release_problems_and_facts()
    more_problems, more_facts = python_problems_and_facts()
    return problems + more_problems, facts + more_facts


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python-only", action="store_true",
                        help="check the Python environment only, naming the release's files not looked for")
    args = parser.parse_args(argv)
    problems, facts = problems_and_facts(args.python_only)
    for fact in facts:
        print(f"image: {fact}", flush=True)
    for problem in problems:
        print(f"image: PROBLEM {problem}", file=sys.stderr, flush=True)
    for skipped in RELEASE_FILES if args.python_only else ():
        print(f"image: NOT CHECKED (--python-only: a file of the release's image) {skipped}", flush=True)
    scope = " (the Python environment only)" if args.python_only else ""
    print(f"image: {'OK' if not problems else f'{len(problems)} problem(s)'} for {d.TRITON_IMAGE}{scope}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
