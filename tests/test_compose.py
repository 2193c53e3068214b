"""docker-compose.yml is valid Compose and keeps the production promises: one image, loopback ports, no default password."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from python_models.export.deployment import DALI_BACKEND_WHEEL_DIR, TRITON_IMAGE, TRITON_RELEASE
from python_models.export.image_build import dockerfile_instructions, expand, image_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    return Draft202012Validator(schema)


def test_valid_against_the_compose_specification(compose, validator):
    errors = sorted(validator.iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_the_schema_check_can_fail(compose, validator):
    broken = copy.deepcopy(compose)
    broken["services"]["triton"]["ports"] = {"http": 8000}
    broken["services"]["triton"]["healthcheck"]["retries"] = "three"
    assert len(list(validator.iter_errors(broken))) >= 2


FORBIDDEN_IN_BUILD = {
    "pip uninstall": "removes packages (Debian's cannot be removed by pip)",
    "--ignore-installed": "shadows packages instead of isolating them",
    "--break-system-packages": "writes into the system Python that apt owns",
    "apt-get remove": "removes dpkg-owned packages", "apt-get purge": "removes dpkg-owned packages",
    "dpkg -r": "removes dpkg-owned packages", "dpkg --remove": "removes dpkg-owned packages",
    "nvidia-dali": "installs a DALI that is not pinned with the release (it comes from pyproject's [dali] extra)",
}
REQUIRED_USER = re.compile(r"\$\{YOLO11_UID:\?[^}]+\}:\$\{YOLO11_GID:\?[^}]+\}")


def promises(compose: dict) -> list[str]:
    """What a production compose file must keep; empty when it does."""
    problems = []
    services = compose["services"]
    export, triton, check = services["export"], services["triton"], services.get("check", {})
    for name, service in (("export", export), ("check", check)):
        if service.get("image") != triton.get("image") or service.get("build") != triton.get("build"):
            problems.append(f"{name} and triton must run the same image")
    dockerfile = triton.get("build", {}).get("dockerfile_inline", "")
    if f"FROM {TRITON_IMAGE}" not in dockerfile or TRITON_RELEASE not in triton.get("image", ""):
        problems.append(f"the image must be built FROM {TRITON_IMAGE} and tagged with {TRITON_RELEASE}")
    for text, why in FORBIDDEN_IN_BUILD.items():
        if text in dockerfile:
            problems.append(f"the build runs {text!r}: {why}")
    installs = re.findall(r"pip install ([^&\n]+)", dockerfile)
    if not installs or any(not re.fullmatch(r'(--upgrade pip|"?\.(\[[a-z,-]+\])?"?)\s*', i.strip()) for i in installs):
        problems.append(f"the build may pip-install only pip and the project itself, not {installs}")
    if "python3 -m venv" not in dockerfile or dockerfile.find("python3 -m venv") > dockerfile.find("pip install"):
        problems.append("the build must install into a virtual environment made before any pip install")
    if DALI_BACKEND_WHEEL_DIR in image_env(dockerfile).get("PYTHONPATH", ""):
        problems.append("the build must clear the release's PYTHONPATH (ENV PYTHONPATH=): its DALI backend's folder, "
                        "numpy 2 included, would come before the venv")
    if "YOLO_AUTOINSTALL=false" not in dockerfile:
        problems.append("the image must set YOLO_AUTOINSTALL=false: Ultralytics would pip-install at run time")
    if "tools/check_image.py" not in dockerfile:
        problems.append("the build must end with tools/check_image.py")
    for name, service in services.items():
        if "pip" in " ".join(map(str, service.get("command", []) or [])):
            problems.append(f"{name} installs at run time")
    if triton.get("depends_on", {}).get("export", {}).get("condition") != "service_completed_successfully":
        problems.append("triton must start after export succeeded")
    command = export.get("command", [])
    if "--profile" not in command or command[command.index("--profile") + 1] != "gpu":
        problems.append("export must require the GPU profile's plans (--profile gpu)")
    if "--weights-dir" not in command:
        problems.append("export must download weights names into the weights volume (--weights-dir)")
    weights_dir = command[command.index("--weights-dir") + 1] if "--weights-dir" in command else None
    if not any(str(v).split(":")[1:2] == [weights_dir] and not str(v).endswith(":ro") for v in export.get("volumes", [])):
        problems.append("the weights volume must be mounted writable where export downloads")
    check_command = " ".join(check.get("command", []))
    if "tools/check_server.py" not in check_command or "triton:8001" not in check_command or "check" not in check.get("profiles", []):
        problems.append("a check service (profile check) must run tools/check_server.py against triton")
    for name, service in services.items():
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name} publishes {port} beyond loopback")
    if "/v2/health/ready" not in " ".join(triton.get("healthcheck", {}).get("test", [])):
        problems.append("triton's healthcheck must hit /v2/health/ready")
    for name in ("export", "triton", "check"):
        user = str(services.get(name, {}).get("user", "root"))
        if user.split(":")[0] in ("", "0", "root"):
            problems.append(f"{name} runs as root")
        elif not REQUIRED_USER.fullmatch(user):
            problems.append(f"{name} must run as ${{YOLO11_UID:?...}}:${{YOLO11_GID:?...}} from .env, not {user}")
        devices = services.get(name, {}).get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if not any("gpu" in d.get("capabilities", []) for d in devices):
            problems.append(f"{name} reserves no GPU")
    if re.search(r"\$\{(UID|GID)\b", yaml.safe_dump(compose)):
        problems.append("UID/GID are neither exported by bash nor set at all: compose would use the default")
    if not str(triton.get("shm_size", "")).endswith("gb"):
        problems.append("triton needs shm_size in GB for the Python backend")
    if triton.get("restart") not in ("always", "unless-stopped"):
        problems.append("triton needs a restart policy")
    password = services["grafana"].get("environment", {}).get("GF_SECURITY_ADMIN_PASSWORD", "")
    if not re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(password)):
        problems.append("Grafana's admin password must come from the environment, required, with no default")
    return problems


def test_production_promises_hold(compose):
    assert promises(compose) == []


def _dockerfile(c: dict, edit) -> None:
    for name in ("export", "triton", "check"):
        build = dict(c["services"][name]["build"])
        build["dockerfile_inline"] = edit(build["dockerfile_inline"])
        c["services"][name]["build"] = build


@pytest.mark.parametrize("breakage,expected", [
    (lambda c: c["services"]["export"].__setitem__("image", "other:1"), "same image"),
    (lambda c: c["services"]["triton"]["depends_on"]["export"].__setitem__("condition", "service_started"), "after export"),
    (lambda c: c["services"]["grafana"]["ports"].__setitem__(0, "3000:3000"), "beyond loopback"),
    (lambda c: c["services"]["triton"]["healthcheck"].__setitem__("test", ["CMD", "true"]), "health/ready"),
    (lambda c: c["services"]["grafana"]["environment"].__setitem__("GF_SECURITY_ADMIN_PASSWORD", "admin"), "no default"),
    (lambda c: c["services"]["triton"].__setitem__("user", "0:0"), "root"),
    (lambda c: c["services"]["triton"].__setitem__("user", "${UID:-1000}:${GID:-1000}"), "YOLO11_UID"),
    (lambda c: _dockerfile(c, lambda d: d.replace('pip install ".[image]"', 'pip install ".[image]" nvidia-dali-cuda130')),
     "nvidia-dali"),
    (lambda c: _dockerfile(c, lambda d: d.replace("RUN python3 -m venv /opt/venv", "RUN pip uninstall -y setuptools")),
     "pip uninstall"),
    (lambda c: _dockerfile(c, lambda d: d.replace("YOLO_AUTOINSTALL=false", "")), "YOLO_AUTOINSTALL"),
    (lambda c: _dockerfile(c, lambda d: d.replace("ENV PYTHONPATH=\n", "")), "PYTHONPATH"),
    (lambda c: c["services"]["export"].__setitem__("command", ["python3", "tools/export.py"]), "--profile gpu"),
    (lambda c: c["services"]["export"].__setitem__("volumes", ["./weights:/weights:ro"]), "weights volume"),
    (lambda c: c["services"]["triton"].__setitem__("command", ["sh", "-c", "pip install x && python3 tools/serve.py"]),
     "installs at run time"),
    (lambda c: c["services"].pop("check"), "check service"),
])
def test_each_promise_check_fires(compose, breakage, expected):
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert any(expected in p for p in promises(broken)), promises(broken)


def test_the_build_context_holds_only_what_the_image_copies():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[0 if ignore[0] == "*" else ignore.index("*")] == "*", "deny everything by default"
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    copied = set()
    for line in compose["services"]["triton"]["build"]["dockerfile_inline"].splitlines():
        if line.strip().startswith("COPY "):
            copied.update(line.split()[1:-1])
    assert copied == allowed, (copied, allowed)
    assert not allowed & {".venv", ".env", ".git", "model_repository", "weights"}


def test_the_cpu_profile_runs_the_dali_of_the_pinned_release():
    tomllib = pytest.importorskip("tomllib")
    import nvidia.dali

    from python_models.export.deployment import DALI_PACKAGE, DALI_VERSION

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = extras["dali"]
    assert pin == f"{DALI_PACKAGE}=={DALI_VERSION}", "the DALI package of the release's CUDA (its backend's CMake)"
    assert "yolo11-triton[dali]" in extras["cpu-profile"] and "yolo11-triton[dali]" in extras["image"]
    assert nvidia.dali.__version__ == DALI_VERSION, "the CPU twins must run the DALI the production backend runs"


def test_no_credential_is_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert ".env" not in tracked
    ignored = subprocess.run(["git", "check-ignore", ".env"], cwd=ROOT, capture_output=True, text=True)
    assert ignored.returncode == 0, ".env must be git-ignored"
    pattern = re.compile(r"(GF_SECURITY_ADMIN_PASSWORD|GRAFANA_ADMIN_PASSWORD|TRITON_ADMIN_KEY)\s*[=:]\s*['\"]?(?!\$\{)[A-Za-z0-9]")
    for name in tracked:
        path = ROOT / name
        if path.suffix in (".yml", ".yaml", ".json", ".env", ".py", ".toml", ".md", ".sh") and path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                assert not pattern.search(line), f"{name}: {line.strip()}"


# What tools/check_image.py leaves, run as root with the image's HOME=/tmp (seen running it with HOME, TMPDIR and
# YOLO_CONFIG_DIR pointed at an empty folder): Ultralytics' settings, ONNX Runtime's device id under ~/.cache, and
# in the temporary folder inductor's cache folder and ONNX Runtime's session file.
FAKE_CHECK = """\
import os, sys, tempfile
from pathlib import Path
for path in (Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics" / "settings.json",
             Path(os.environ["HOME"]) / ".cache" / "Microsoft" / "DeveloperTools" / ".onnxruntime" / "deviceid",
             Path(tempfile.gettempdir()) / "torchinductor_root" / ".keep", Path(tempfile.gettempdir()) / ".ses"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("root's")
sys.exit(int(sys.argv[1]))
"""


def run_the_image_check_step(dockerfile: str, fake_tmp: Path, check_status: int) -> int:
    """Run the Dockerfile's RUN that calls tools/check_image.py with the image's ENV, /tmp standing for fake_tmp
    and the check replaced by one that writes what the real one writes and exits with check_status."""
    instructions = dockerfile_instructions(dockerfile)
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(fake_tmp)}  # the image's TMPDIR is unset: /tmp
    for keyword, arguments in instructions:
        if keyword == "ENV":
            for assignment in shlex.split(arguments):
                name, _, value = assignment.partition("=")
                env[name] = value.replace("/tmp", str(fake_tmp))
    (step,) = [a for k, a in instructions if k == "RUN" and "tools/check_image.py" in a]
    fake = fake_tmp.parent / "fake_check.py"
    fake.write_text(FAKE_CHECK)
    command = step.replace("/tmp", str(fake_tmp)).replace("python3 tools/check_image.py",
                                                          f"{sys.executable} {fake} {check_status}")
    env["PATH"] = env["PATH"].replace("$PATH", "/usr/bin:/bin")
    return subprocess.run(["/bin/sh", "-c", command], env=env, cwd=fake_tmp.parent).returncode


def image_tmp_problems(compose: dict, tmp_path: Path) -> list[str]:
    """Where the build leaves root's files that the run-time user writes; empty when it leaves none."""
    problems = []
    dockerfile = compose["services"]["triton"]["build"]["dockerfile_inline"]
    env = image_env(dockerfile)
    if env.get("HOME") != "/tmp":
        problems.append(f"HOME is {env.get('HOME')!r}, not the /tmp the image leaves empty")
    config_dirs = [env.get("YOLO_CONFIG_DIR", "")] + [
        s.get("environment", {}).get("YOLO_CONFIG_DIR", "/tmp/") for s in compose["services"].values()
        if s.get("image") == compose["services"]["triton"]["image"]]
    if not all(d.startswith("/tmp/") for d in config_dirs):
        problems.append(f"YOLO_CONFIG_DIR {config_dirs} must lie in the /tmp the image leaves empty")
    for status in (0, 1):
        fake_tmp = tmp_path / f"tmp{status}"
        fake_tmp.mkdir(mode=0o755)
        (fake_tmp / "left-by-pip").write_text("root's")  # an earlier step's leftover
        code = run_the_image_check_step(dockerfile, fake_tmp, status)
        if status and not code:
            problems.append("a failing tools/check_image.py does not fail the build")
        if status:
            continue
        if code:
            problems.append(f"the check's step fails ({code}) when the check passes")
        if left := sorted(str(p.relative_to(fake_tmp)) for p in fake_tmp.rglob("*")):
            problems.append(f"the image keeps root's files in /tmp: {left}")
        if fake_tmp.stat().st_mode & 0o7777 != 0o1777:
            problems.append(f"/tmp is left mode {fake_tmp.stat().st_mode & 0o7777:o}, not 1777")
    return problems


def test_the_image_leaves_no_root_owned_files_where_the_run_time_user_writes(compose, tmp_path):
    """The build runs as root, the containers as the operator's uid: Ultralytics' settings, HOME's caches and the
    temporary folder must not be root's in the image (a root-owned /tmp/ultralytics left Ultralytics' settings
    unwritable). Everything the run-time user writes lies under /tmp; the check's step leaves /tmp empty and
    world-writable, whatever earlier steps left there, and a failing check still fails the build."""
    assert image_tmp_problems(compose, tmp_path) == []


def _check_step(c: dict, step: str) -> None:
    _dockerfile(c, lambda d: re.sub(r"^RUN .*tools/check_image\.py.*$", step, d, flags=re.M))


@pytest.mark.parametrize("breakage,expected", [
    (lambda c: _check_step(c, "RUN python3 tools/check_image.py"), "ultralytics/Ultralytics/settings.json"),
    (lambda c: _check_step(c, "RUN python3 tools/check_image.py && rm -rf /tmp/ultralytics"), ".cache"),
    (lambda c: _check_step(c, "RUN python3 tools/check_image.py; find /tmp -mindepth 1 -delete && chmod 1777 /tmp"),
     "does not fail the build"),
    (lambda c: c["services"]["triton"]["environment"].__setitem__("YOLO_CONFIG_DIR", "/opt/yolo11-triton/.config"),
     "YOLO_CONFIG_DIR"),
])
def test_each_root_owned_tmp_check_fires(compose, tmp_path, breakage, expected):
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert any(expected in p for p in image_tmp_problems(broken, tmp_path)), image_tmp_problems(broken, tmp_path)


def _unwritable_as_run_time_user(home: Path) -> list[str]:
    """tools/check_image.py's unwritable_run_time_folders() as the containers run it: not root (nobody, when
    this is root), HOME and the temporary folder at ``home``, Ultralytics' settings under it. In a forked child:
    the interpreter lives under /root, which another user cannot enter."""
    from python_models.cli import check_image as tool

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 70
        try:
            os.close(read)
            if os.getuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            os.environ.update(HOME=str(home), TMPDIR=str(home), YOLO_CONFIG_DIR=str(home / "ultralytics"))
            tempfile.tempdir = None  # gettempdir() reads TMPDIR again
            os.write(write, json.dumps(tool.unwritable_run_time_folders()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        result = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, result
    return json.loads(result)


def test_check_image_names_root_owned_run_time_folders():
    """Run as the containers' user, the image check names Ultralytics' settings folder when the build left it
    root's (as it did before the check's step emptied /tmp), and nothing in a /tmp-like HOME that is not."""
    home = Path(tempfile.mkdtemp(prefix="yolo11-home-"))  # not under pytest's private tmp: nobody can enter that
    try:
        home.chmod(0o1777)
        assert _unwritable_as_run_time_user(home) == []
        settings = home / "ultralytics" / "Ultralytics"
        settings.mkdir(parents=True)
        if os.getuid() != 0:  # owned by this user: take the write permission instead of the ownership
            settings.chmod(0o555)
            settings.parent.chmod(0o555)
        unwritable = _unwritable_as_run_time_user(home)
        assert [u.split(" (")[0] for u in unwritable] == [str(settings.parent), str(settings)], unwritable
    finally:
        for folder in (home / "ultralytics", home / "ultralytics" / "Ultralytics"):
            if folder.exists():
                folder.chmod(0o755)
        shutil.rmtree(home, ignore_errors=True)


def device_count(value) -> int:
    """A device reservation's count as compose reads it after interpolation: "all" is -1, a number (or a string of
    one: compose-go types/device.go, DeviceCount.DecodeMapstructure) that number; anything else is refused."""
    if isinstance(value, int):
        return value
    if str(value).lower() == "all":
        return -1
    if not re.fullmatch(r"-?\d+", str(value)):
        raise ValueError(f"invalid value {value!r}, the only value allowed is 'all' or a number")
    return int(value)


def gpu_problems(compose: dict) -> list[str]:
    """Where the GPUs the serving containers get and the GPU count the export sizes queues for part, with GPUS unset
    (every GPU of the host; the export counts what it sees) and GPUS=2; empty when they never do. serve then finds
    the count it was sized for (its gpu-count check refuses any other)."""
    problems = []
    for gpus in (None, "2"):
        env = {} if gpus is None else {"GPUS": gpus}
        wanted = -1 if gpus is None else int(gpus)
        for name in ("export", "triton", "check"):
            service = compose["services"][name]
            (device,) = [d for d in service["deploy"]["resources"]["reservations"]["devices"]
                         if "gpu" in d.get("capabilities", [])]
            count = device_count(expand(str(device.get("count", "all")), env))
            if count != wanted:
                problems.append(f"{name} with GPUS={gpus or 'unset'} reserves {'all' if count == -1 else count} "
                                f"GPU(s), not {'all' if wanted == -1 else wanted}")
        sized_for = expand(str(compose["services"]["export"]["environment"].get("YOLO11_GPUS", "")), env)
        if sized_for != (gpus or ""):
            problems.append(f"export with GPUS={gpus or 'unset'} sizes queues for {sized_for or 'the GPUs it sees'}, "
                            f"not {gpus or 'the GPUs it sees'}")
    return problems


def test_the_gpu_reservation_follows_gpus_and_the_queues_are_sized_for_it(compose):
    """One setting, GPUS: unset, every serving container gets all of the host's GPUs and the export sizes each
    model's queue for the GPUs it sees (those); GPUS=2 reserves 2 and sizes for 2. A fixed count, or queues sized
    from another variable, fires."""
    assert gpu_problems(compose) == []
    for breakage, expected in ((lambda services: services["triton"]["deploy"]["resources"]["reservations"]
                                ["devices"][0].__setitem__("count", 1), "triton with GPUS=2 reserves 1 GPU(s), not 2"),
                               (lambda services: services["export"]["environment"].__setitem__(
                                   "YOLO11_GPUS", "${NUM_GPUS:-}"), "sizes queues for the GPUs it sees, not 2")):
        broken = copy.deepcopy(compose)
        breakage(broken["services"])
        assert any(expected in p for p in gpu_problems(broken)), gpu_problems(broken)
    with pytest.raises(ValueError, match="'all' or a number"):
        device_count(expand("${GPUS:-all}", {"GPUS": "two"}))
