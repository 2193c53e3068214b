"""The stub supervisor against real processes: a dead stub is one reload, and the replaced instances' stubs that
Triton leaves running are killed after the grace period, not before (the server-side half: test_reliability.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from python_models.serving.supervisor import STUB_NAME, StubSupervisor

MODEL = "fake_supervised_model"


class FakeStubs:
    """Processes whose command lines read as the Python backend's stubs of MODEL, children of this process."""

    def __init__(self, tmp: Path) -> None:
        self.script = tmp / STUB_NAME
        self.script.write_text("import time\ntime.sleep(600)\n")
        self.model_file = tmp / MODEL / "1" / "model.py"
        self.model_file.parent.mkdir(parents=True)
        self.processes: list[subprocess.Popen] = []

    def spawn(self, count: int) -> list[subprocess.Popen]:
        new = [subprocess.Popen([sys.executable, str(self.script), str(self.model_file), "shm", f"{MODEL}_0_{i}"])
               for i in range(count)]
        self.processes += new
        return new


class FakeControl:
    """Triton as the supervisor sees it: MODEL wants two stubs, and a reload starts two new ones."""

    def __init__(self, stubs: FakeStubs) -> None:
        self.stubs, self.reloaded = stubs, 0

    def python_models(self) -> dict[str, int]:
        return {MODEL: 2}

    def reload(self, model: str, generation: int) -> None:
        self.reloaded += 1
        self.stubs.spawn(2)


def test_a_dead_stub_is_one_reload_and_the_replaced_survivor_is_killed_after_the_grace_period(tmp_path):
    stubs = FakeStubs(tmp_path)
    control = FakeControl(stubs)
    logs: list[str] = []
    supervisor = StubSupervisor(os.getpid(), "unused", {}, log=logs.append, control=control)
    supervisor.RETIRED_GRACE_S = 2.0
    try:
        victim, survivor = stubs.spawn(2)
        time.sleep(0.3)  # the command lines are the script's once the interpreter has started
        assert supervisor.check() == [] and control.reloaded == 0, logs
        victim.kill()
        victim.wait()
        assert supervisor.check() == [MODEL] and control.reloaded == 1, logs
        replacements = stubs.processes[2:]
        assert supervisor.check() == [], "a retired survivor is not a missing stub"
        time.sleep(0.5)
        assert survivor.poll() is None, "killed before the grace period: it may still hold requests"
        time.sleep(1.6)
        assert supervisor.check() == [] and control.reloaded == 1, logs
        assert survivor.wait(timeout=10) == -9, "a survivor outliving the grace period is killed"
        assert any(f"{MODEL}: killed retired stubs {survivor.pid}," in line for line in logs), logs
        assert all(p.poll() is None for p in replacements), "the new instances' stubs are left alone"
        supervisor.check()
        assert sum("killed retired" in line for line in logs) == 1, logs
    finally:
        for process in stubs.processes:
            process.kill()
            process.wait()
