"""docker-compose.yml is valid Compose and keeps the production promises: one image, loopback ports, no default password."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from importlib import resources
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from python_models.deployment import TRITON_IMAGE, TRITON_RELEASE

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


def promises(compose: dict) -> list[str]:
    """What a production compose file must keep; empty when it does."""
    problems = []
    services = compose["services"]
    export, triton = services["export"], services["triton"]
    if export.get("image") != triton.get("image") or export.get("build") != triton.get("build"):
        problems.append("export and triton must run the same image")
    dockerfile = triton.get("build", {}).get("dockerfile_inline", "")
    if f"FROM {TRITON_IMAGE}" not in dockerfile or TRITON_RELEASE not in triton.get("image", ""):
        problems.append(f"the image must be built FROM {TRITON_IMAGE} and tagged with {TRITON_RELEASE}")
    if triton.get("depends_on", {}).get("export", {}).get("condition") != "service_completed_successfully":
        problems.append("triton must start after export succeeded")
    for name, service in services.items():
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name} publishes {port} beyond loopback")
    if "/v2/health/ready" not in " ".join(triton.get("healthcheck", {}).get("test", [])):
        problems.append("triton's healthcheck must hit /v2/health/ready")
    for name in ("export", "triton"):
        user = str(services[name].get("user", "root"))
        if user.split(":")[0] in ("", "0", "root"):
            problems.append(f"{name} runs as root")
        devices = services[name].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if not any("gpu" in d.get("capabilities", []) for d in devices):
            problems.append(f"{name} reserves no GPU")
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


@pytest.mark.parametrize("breakage,expected", [
    (lambda c: c["services"]["export"].__setitem__("image", "other:1"), "same image"),
    (lambda c: c["services"]["triton"]["depends_on"]["export"].__setitem__("condition", "service_started"), "after export"),
    (lambda c: c["services"]["grafana"]["ports"].__setitem__(0, "3000:3000"), "beyond loopback"),
    (lambda c: c["services"]["triton"]["healthcheck"].__setitem__("test", ["CMD", "true"]), "health/ready"),
    (lambda c: c["services"]["grafana"]["environment"].__setitem__("GF_SECURITY_ADMIN_PASSWORD", "admin"), "no default"),
    (lambda c: c["services"]["triton"].__setitem__("user", "0:0"), "root"),
])
def test_each_promise_check_fires(compose, breakage, expected):
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert any(expected in p for p in promises(broken)), promises(broken)


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
