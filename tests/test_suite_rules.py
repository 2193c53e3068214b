"""How the suite itself is organised: the fast loop (``pytest -m "not server"``) leaves out the tests that need a live
server (tests/conftest.py marks them) and the image build's rehearsal (marked ``slow``, and so ``server``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tests_that_need_a_live_server_are_marked_server_from_the_fixtures_they_use():
    """``pytest -m "not server"`` is the fast loop: a test is marked through any fixture that starts a server, however
    deep (``spec`` and ``reference_model`` go through ``server``), and no other test is."""
    from conftest import starts_a_server

    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "server", "-p",
                             "no:cacheprovider", str(ROOT / "tests")], capture_output=True, text=True, cwd=ROOT,
                            timeout=300).stdout.splitlines()
    marked = {line.split("::")[0] for line in listed if "::" in line}
    assert {"tests/test_server_detections.py", "tests/test_own_detector.py", "tests/test_launcher.py"} <= marked
    assert any("test_raw_onnx_has_dynamic_batch" in line for line in listed), "through spec -> server"
    assert not marked & {"tests/test_decode.py", "tests/test_nms.py", "tests/test_architecture.py"}

    def starts_one(tmp_path_factory):
        return start_server(tmp_path_factory.mktemp("x"), "yolo11n.yaml")  # noqa: F821

    def starts_none(tmp_path_factory):
        return tmp_path_factory.mktemp("x")

    assert starts_a_server(starts_one) and not starts_a_server(starts_none)


def test_the_session_removes_the_shared_memory_its_killed_servers_leaked_and_nothing_else(tmp_path, monkeypatch):
    """A region that appeared during the session and that no process maps is a killed server's or stub's leftover
    (64 MB of RAM each, never freed otherwise); a region some process still maps, or one there before the session
    (another run's), stays."""
    import mmap

    import conftest

    monkeypatch.setattr(conftest, "SHM", tmp_path)
    name = conftest.SHM_REGIONS.replace("*", "{}")
    leaked, in_use, older = (tmp_path / name.format(k) for k in ("leaked", "in_use", "older"))
    for region in (leaked, in_use, older):
        region.write_bytes(b"\0" * 4096)
    with open(in_use, "r+b") as handle, mmap.mmap(handle.fileno(), 4096):
        removed = conftest.remove_leaked_shm({older.name})
        assert removed == [leaked.name] and not leaked.exists()
        assert in_use.exists() and older.exists()

        # Shown to fire: a cleanup that ignored the mappings would remove the live server's region.
        monkeypatch.setattr(conftest, "mapped_files", lambda: set())
        assert conftest.remove_leaked_shm({older.name}) == [in_use.name]
