"""The stub supervisor against real processes: a dead stub is one reload, a lingering replaced stub does not stand in
for a dead new one, every reload sends a config the pinned Tritons load anew, and the replaced instances' stubs that
Triton leaves running are killed after the grace period, not before (the server-side half: test_reliability.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from python_models.serving.supervisor import (GENERATION_PARAMETER, STUB_NAME, StubSupervisor, TritonControl,
                                               configured_instances)

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


def test_a_replacement_that_dies_while_the_stub_it_replaced_lingers_is_reloaded(tmp_path):
    """The replaced instances' stubs may live on for the grace period: they do not serve, so they must not make up
    for a new stub that died."""
    stubs = FakeStubs(tmp_path)
    control = FakeControl(stubs)
    logs: list[str] = []
    supervisor = StubSupervisor(os.getpid(), "unused", {}, log=logs.append, control=control)
    try:
        victim, survivor = stubs.spawn(2)
        victim.kill()
        victim.wait()
        assert supervisor.check() == [MODEL] and control.reloaded == 1, logs
        replacement = stubs.processes[2]
        replacement.kill()
        replacement.wait()
        assert survivor.poll() is None, "the replaced survivor is still within its grace period"
        assert supervisor.check() == [MODEL] and control.reloaded == 2, logs
    finally:
        for process in stubs.processes:
            process.kill()
            process.wait()


class ReleaseTriton:
    """Triton's repository API as the pinned releases decide a load with a config (core r24.10 and r26.05:
    ``ModelLifeCycle::AsyncLoad`` and ``ConfigChangeRequiresReload``): a config equal to the serving one except for
    ``instance_group`` and ``version_policy`` only updates the instance group, which reuses every instance, the one
    whose stub died too (``TritonModel::PrepareInstances``); any other difference loads new instances (new stubs)."""

    IGNORED = ("instance_group", "version_policy")

    def __init__(self, stubs: FakeStubs) -> None:
        self.stubs = stubs
        self.config = {"name": MODEL, "backend": "python", "instance_group": [{"count": 2, "kind": "KIND_CPU"}]}
        self.sent: list[dict] = []

    def get_model_repository_index(self, headers=None, as_json=False) -> dict:
        return {"models": [{"name": MODEL, "version": "1", "state": "READY"}]}

    def get_model_config(self, model: str, as_json: bool = False) -> dict:
        return {"config": json.loads(json.dumps(self.config))}

    def load_model(self, model: str, config: str | None = None, headers=None) -> None:
        new = json.loads(config)
        self.sent.append(new)
        compared = [{k: v for k, v in c.items() if k not in self.IGNORED} for c in (self.config, new)]
        if compared[0] != compared[1]:
            self.stubs.spawn(configured_instances(new))
        self.config = new

    def close(self) -> None:
        pass


def test_every_reload_sends_a_config_triton_must_load_anew_the_second_and_third_time_too(tmp_path):
    """A stub killed three times: each reload must start new stubs, which the pinned releases do only when the config
    sent differs from the serving one (``ReleaseTriton``): the supervisor's generation parameter changes every time."""
    stubs = FakeStubs(tmp_path)
    triton = ReleaseTriton(stubs)

    class Control(TritonControl):
        def _client(self):
            return triton

    logs: list[str] = []
    supervisor = StubSupervisor(os.getpid(), "unused", {}, log=logs.append, control=Control("unused", {}))
    supervisor.NEW_STUBS_TIMEOUT_S = 2.0  # a reload Triton treated as an update never brings new stubs
    try:
        stubs.spawn(2)
        for kill in range(1, 4):
            victim = stubs.processes[-1]  # the newest: never a retired stub
            victim.kill()
            victim.wait()
            assert supervisor.check() == [MODEL], f"kill {kill}: {logs}"
            assert len(stubs.processes) == 2 + 2 * kill, f"kill {kill}: no new stubs"
        generations = [config["parameters"][GENERATION_PARAMETER]["string_value"] for config in triton.sent]
        assert len(set(generations)) == 3, generations
    finally:
        for process in stubs.processes:
            process.kill()
            process.wait()
