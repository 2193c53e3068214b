"""The serving image's build, rehearsed here: it fails under the release's PYTHONPATH and passes with it cleared."""

from __future__ import annotations

import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from python_models.export import deployment as d
from python_models.export import image_build as ib

ROOT = Path(__file__).resolve().parents[1]
THE_FIX = re.compile(r"^ENV PYTHONPATH=\s*\n", re.M)
"""docker-compose.yml's line that clears the release's PYTHONPATH before anything is installed."""


def dockerfile() -> str:
    return ib.compose_dockerfile(ROOT / "docker-compose.yml")


def without_the_fix(text: str) -> str:
    unfixed = THE_FIX.sub("", text)
    assert unfixed != text, "docker-compose.yml no longer clears PYTHONPATH with ENV PYTHONPATH="
    return unfixed


def test_the_image_clears_the_release_s_pythonpath_and_the_check_fires_without_it():
    """After the release's ENV (recorded from server r26.05 build.py) and the Dockerfile's, PYTHONPATH is empty; the
    same Dockerfile without its ENV PYTHONPATH= keeps the DALI backend's folder first (and the working directory)."""
    assert ib.image_env(dockerfile())["PYTHONPATH"] == ""
    assert ib.image_env(without_the_fix(dockerfile()))["PYTHONPATH"] == f"{d.DALI_BACKEND_WHEEL_DIR}:"
    path = ib.image_env(dockerfile())["PATH"].split(":")
    assert path[:2] == ["/opt/venv/bin", "/opt/tritonserver/bin"], "the venv's python3 first, then the release's"


def test_env_values_expand_as_docker_expands_them():
    env = {"PATH": "/bin", "EMPTY": ""}
    assert ib.expand("/opt/x:$PATH", env) == "/opt/x:/bin" and ib.expand("${PATH}:${NONE}", env) == "/bin:"
    assert ib.expand("${EMPTY:-all}", env) == "all" and ib.expand("${PATH:+set}", env) == "set"
    assert ib.env_assignments('A=1 B="two words" C=') == [("A", "1"), ("B", "two words"), ("C", "")]
    assert ib.apply_env({"P": "a"}, [("P", "b:$P"), ("Q", "$P")]) == {"P": "b:a", "Q": "a"}, "values see the old env"


def _package(folder: Path, name: str, version: str) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(f"__version__ = {version!r}\n")
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_check_image_names_a_module_imported_from_pythonpath_ahead_of_the_venv(tmp_path, monkeypatch):
    """`check image` says where a module comes from, and fails when that is a PYTHONPATH folder ahead of the venv,
    naming the venv's own copy; the same module on the venv's path alone passes."""
    from python_models.cli.check_image import provenance

    ahead, venv = tmp_path / "backend_folder", tmp_path / "site-packages"
    _package(ahead, "yolo11_shadowed", "2.0.0")
    _package(venv, "yolo11_shadowed", "1.0.0")
    monkeypatch.setattr(sys, "path", [str(ahead), *sys.path, str(venv)])
    monkeypatch.setenv("PYTHONPATH", f"{ahead}:")
    monkeypatch.delitem(sys.modules, "yolo11_shadowed", raising=False)
    fact, problem = provenance("yolo11_shadowed", "yolo11_shadowed")
    assert fact == f"yolo11_shadowed 2.0.0 imported from {ahead / 'yolo11_shadowed'}"
    assert problem and f"from {ahead}, a PYTHONPATH folder" in problem and f"1.0.0 in {venv}" in problem, problem

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(ahead)])
    monkeypatch.setenv("PYTHONPATH", "")
    monkeypatch.delitem(sys.modules, "yolo11_shadowed")
    assert provenance("yolo11_shadowed", "yolo11_shadowed") == (
        f"yolo11_shadowed 1.0.0 imported from {venv / 'yolo11_shadowed'}", None)


def test_the_rehearsal_refuses_a_folder_made_otherwise_and_names_the_installer(tmp_path):
    prepared = ib.Prepared(tmp_path)
    assert "tools/install_image_rehearsal.sh" in ib.not_prepared(prepared)
    (tmp_path / "dali").mkdir()
    other = {**ib.prepared_key(), "command": [*d.DALI_BACKEND_PIP_INSTALL[:-1], "nvidia-dali-cuda130==2.0.0"]}
    prepared.stamp.write_text(json.dumps({"key": other}))
    assert "no DALI-backend folder made by" in ib.not_prepared(prepared), "a changed command rebuilds the folder"
    prepared.stamp.write_text(json.dumps({"key": ib.prepared_key()}))
    _package(tmp_path / "dali", "numpy", "2.4.6")
    mine = ib.versions(ib.seed_paths())["numpy"]
    assert f"numpy=={mine}" in ib.not_prepared(prepared), "the venv's numpy must wait in the wheelhouse"


@pytest.mark.slow
def test_the_image_build_fails_under_the_release_s_pythonpath_and_passes_with_it_cleared():
    """docker-compose.yml's own build steps, in a fake root set up as the release sets up its Python (its ENV, its DALI
    backend's folder made by the backend's own pip command, numpy 2 included, first on PYTHONPATH): without ENV
    PYTHONPATH= the image check fails the build on numpy 2 from that folder; with it, every step passes. Nothing is
    downloaded (tools/install_image_rehearsal.sh made the folder and the wheels)."""
    prepared = ib.Prepared(ROOT / ib.PREPARED)
    if problem := ib.not_prepared(prepared):
        pytest.fail(problem)
    assert {"numpy", "nvidia-dali-cuda130"} <= set(folder := ib.versions([str(prepared.dali)]))
    assert folder["numpy"].startswith("2.") and folder["nvidia-dali-cuda130"] == d.DALI_VERSION
    with ThreadPoolExecutor(2) as pool:  # two cores: both at once take about as long as one
        old, new = pool.map(lambda text: ib.rehearse(text, ROOT, prepared), (without_the_fix(dockerfile()),
                                                                            dockerfile()))
    assert not old.ok, "\n".join(old.lines)
    assert "tools/check_image.py" in old.reason and "exited 1" in old.reason, old.reason
    assert f"numpy {folder['numpy']} is imported from {d.DALI_BACKEND_WHEEL_DIR}" in old.reason, old.reason
    assert any("Not uninstalling numpy" in line for line in old.lines), "pip took the folder's numpy as installed"
    assert new.ok, "\n".join(new.lines)
    shown = "\n".join(new.lines)
    assert "SKIPPED: apt-get" in shown and "STAND-IN perf-analyzer==" in shown and "not covered here:" in shown
    assert "image: NOT CHECKED (--python-only" in shown and "image: OK" in shown
    assert ib.versions([str(prepared.dali)]) == folder, "the rehearsal left the prepared folder as it was"
    assert not os.environ.get("PIP_NO_INDEX"), "the rehearsal's offline settings stay in its own processes"
