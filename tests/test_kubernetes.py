"""deploy/kubernetes: every overlay renders (kustomize build) and validates against the OpenAPI schema of a pinned
Kubernetes release; the promises the serving stack rests on hold, each shown to fire on a broken copy.

No cluster can run here. The readiness probe's script runs here, against a fake Triton's health endpoints in each
case it must tell apart (tests/test_launcher.py shows the real server serving the others beside a model that failed
to load). What Triton's metrics must offer the autoscaler is checked against a live server in
tests/test_monitoring.py (the prometheus-adapter rule, on a real Prometheus)."""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from python_models.export.artifacts import EXPORT_COMPLETE
from python_models.contract import PUBLIC_MODELS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUSTOMIZE = Path(sys.executable).parent / "kustomize"
KUBERNETES_VERSION = "1.34.0"
"""The release the manifests are validated against (kubernetes-validate ships its schemas)."""
CUSTOM_KINDS = {"PodMonitor"}
"""Prometheus Operator kinds: no schema in Kubernetes' own; the promises below check what they must say."""
REPOSITORY_MOUNT = "/opt/yolo11-triton/artifacts"
ADAPTER_VALUES = DEPLOY / "autoscaling" / "prometheus-adapter-values.yaml"
TARGETS = sorted(p.relative_to(DEPLOY).as_posix() for p in [DEPLOY / "base", *(DEPLOY / "overlays").iterdir()])


def render(target: str) -> list[dict]:
    if not KUSTOMIZE.exists():
        pytest.fail(f"no {KUSTOMIZE}: run tools/install_kustomize.sh (tools/bootstrap.sh does)")
    built = subprocess.run([str(KUSTOMIZE), "build", str(DEPLOY / target)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {target: render(target) for target in TARGETS}


def schema_problems(docs: list[dict]) -> list[str]:
    problems = []
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            problems.append(f"{doc['kind']}/{doc['metadata'].get('name')}: {str(exc).splitlines()[0]}")
    return problems


def test_every_overlay_renders_and_validates_against_the_pinned_kubernetes(rendered):
    assert "overlays/h100" in rendered
    for target, docs in rendered.items():
        assert schema_problems(docs) == [], target
        kinds = {d["kind"] for d in docs}
        assert {"Job", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "PodMonitor",
                "PersistentVolumeClaim", "ConfigMap"} <= kinds, target


def test_schema_validation_fires_on_a_broken_copy(rendered):
    docs = copy.deepcopy(rendered["overlays/h100"])
    server = by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    server["readinesProbe"] = server.pop("readinessProbe")  # a typo strict validation rejects
    by_kind(docs, "PodDisruptionBudget")["spec"]["minAvailable"] = [1]
    problems = schema_problems(docs)
    assert any(p.startswith("Deployment/") for p in problems) and any(p.startswith("PodDisruptionBudget/") for p in problems)


# --- the promises -----------------------------------------------------------------------------------------------

def by_kind(docs: list[dict], kind: str, component: str | None = None, prefix: str = "") -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and (component is None or component_of(d) == component)
              and d["metadata"]["name"].startswith(prefix)]
    return doc


def component_of(doc: dict) -> str | None:
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def container(doc: dict, name: str) -> dict:
    (found,) = [c for c in pod_spec(doc)["containers"] if c["name"] == name]
    return found


def named_port(c: dict, name: str) -> int | None:
    return next((p["containerPort"] for p in c.get("ports", []) if p["name"] == name), None)


def mount(c: dict, path: str) -> dict | None:
    return next((m for m in c.get("volumeMounts", []) if m["mountPath"] == path), None)


def volume(doc: dict, name: str) -> dict:
    return next((v for v in pod_spec(doc).get("volumes", []) if v["name"] == name), {})


def env_value(docs: list[dict], c: dict, name: str) -> str | None:
    """The value ``c`` gets for ``name``: given in the manifest or read from a rendered ConfigMap's key."""
    entry = next((e for e in c.get("env", []) if e["name"] == name), {})
    if "value" in entry:
        return entry["value"]
    ref = entry.get("valueFrom", {}).get("configMapKeyRef", {})
    config = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref.get("name")), {})
    return config.get("data", {}).get(ref.get("key"))


def served_models(c: dict) -> list[str]:
    """The public models tools/serve.py serves with the container's arguments (--models, default all)."""
    args = c.get("args", [])
    return args[args.index("--models") + 1].split(",") if "--models" in args[:-1] else list(PUBLIC_MODELS)


class FakeTriton(BaseHTTPRequestHandler):
    """Triton's health endpoints as 2.51 answers them: live always; a model's ready 200 when it is, else 400;
    the server's ready (strict readiness) 200 only when every served model is."""

    ready: set[str] = set()
    served: set[str] = set()

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/v2/health/live":
            ok = True
        elif self.path == "/v2/health/ready":
            ok = self.served <= self.ready
        else:
            model = self.path.removeprefix("/v2/models/").removesuffix("/ready")
            ok = self.path == f"/v2/models/{model}/ready" and model in self.ready
        self.send_response(200 if ok else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@functools.cache
def fake_triton() -> int:
    """The port of a FakeTriton serving for the rest of the session."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTriton)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


@functools.cache
def probe_passes(command: tuple[str, ...], http: int, env: tuple[tuple[str, str], ...], ready: frozenset[str],
                 served: frozenset[str], timeout_s: float) -> bool:
    """Runs an exec probe's command here against a FakeTriton on which ``ready`` are ready: True when it passes
    (exits 0). The probe's python3 is this interpreter; the pod's address 127.0.0.1:<http> is the fake's."""
    port = fake_triton()
    FakeTriton.ready, FakeTriton.served = set(ready), set(served)
    argv = [sys.executable if i == 0 and word == "python3" else word.replace(f"127.0.0.1:{http}", f"127.0.0.1:{port}")
            for i, word in enumerate(command)]
    try:
        return subprocess.run(argv, env={"PATH": os.environ["PATH"], **dict(env)}, capture_output=True,
                              timeout=timeout_s).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def readiness_problems(docs: list[dict], triton: dict) -> list[str]:
    """The pod takes traffic while any model of READINESS_MODELS is ready, and only then: checked by running the
    rendered probe against a fake Triton in each case."""
    served = served_models(triton)
    wanted = env_value(docs, triton, "READINESS_MODELS")
    models = wanted.split(",") if wanted else []
    if not models or set(models) - set(served):
        return [f"readiness: READINESS_MODELS ({wanted}) must name public models the pod serves ({','.join(served)})"]
    probe = triton.get("readinessProbe", {})
    command = probe.get("exec", {}).get("command", [])
    http = named_port(triton, "http")
    if not command or f"127.0.0.1:{http}" not in " ".join(command):
        return [f"readiness: the readinessProbe must be an exec probe asking Triton on 127.0.0.1:{http} which "
                "models are ready (no httpGet can say 'any of these')"]
    problems = []

    def passes(ready: set[str]) -> bool:
        return probe_passes(tuple(command), http, (("READINESS_MODELS", wanted),), frozenset(ready),
                            frozenset(served), probe.get("timeoutSeconds", 1) + 5)

    # The models the probe asks first and last failed, only one or none of them serves, only others do, all do.
    cases = (set(served) - {models[0]}, set(served) - {models[-1]}, {models[-1]}, set(), set(served) - set(models),
             set(served))
    for ready in dict.fromkeys(frozenset(c) for c in cases):
        ready_text = ",".join(sorted(ready)) or "none"
        if ready & set(models) and not passes(ready):
            problems.append(f"readiness: Ready while any model of READINESS_MODELS is ready, whichever failed: the "
                            f"probe failed with {ready_text} ready")
        elif not ready & set(models) and passes(ready):
            problems.append(f"readiness: not Ready while no model of READINESS_MODELS is ready: the probe passed "
                            f"with {ready_text} ready")
    return problems


def compose_service(name: str) -> dict:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"][name]


def promises(docs: list[dict]) -> list[str]:
    """What is broken, one line per promise; empty when every promise holds."""
    problems = []
    server = by_kind(docs, "Deployment")
    job = by_kind(docs, "Job")
    triton = container(server, "triton")
    export = container(job, "export")
    pod_labels = server["spec"]["template"]["metadata"]["labels"]

    # One GPU per serving pod, one for the export.
    for what, c in (("serving pod", triton), ("export Job", export)):
        if str(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")) != "1":
            problems.append(f"GPU: the {what} must ask for exactly one nvidia.com/gpu")

    # Probes on Triton's HTTP port. What restarts a pod (startup, liveness) asks only whether the server is up:
    # whole-server readiness there (strict: every model) or any model's would restart it for one failed model.
    http = named_port(triton, "http")
    if http != 8000 or named_port(triton, "grpc") != 8001 or named_port(triton, "metrics") != 8002:
        problems.append("ports: http 8000, grpc 8001 and metrics 8002 as tools/serve.py serves them")
    for probe in ("startupProbe", "livenessProbe"):
        get = triton.get(probe, {}).get("httpGet", {})
        if set(triton.get(probe, {})) & {"exec", "grpc", "tcpSocket"} or get.get("path") != "/v2/health/live" \
                or get.get("port") not in ("http", http):
            problems.append(f"probes: {probe} must GET /v2/health/live on the http port, never a readiness: a "
                            "model that fails to load must not restart the pod")
    startup = triton.get("startupProbe", {})
    if startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) < 300:
        problems.append("probes: the startup probe must allow the warm-up (compose's start_period, 300 s) at least")
    problems += readiness_problems(docs, triton)

    # The image's entrypoint runs (the NGC one sets up CUDA forward compatibility): a container of the serving
    # image gives args:, as compose's command: does, never command:, which would replace the entrypoint.
    for doc in (server, job):
        for c in pod_spec(doc).get("initContainers", []) + pod_spec(doc)["containers"]:
            if c.get("image") == triton.get("image") and "command" in c:
                problems.append(f"entrypoint: {c['name']} must give args:, not command:, so that the serving "
                                "image's entrypoint runs")

    # Non-root, nothing to escalate, read-only root filesystem.
    for what, doc in (("serving pod", server), ("export Job", job)):
        context = pod_spec(doc).get("securityContext", {})
        if not context.get("runAsNonRoot") or context.get("runAsUser", 0) == 0:
            problems.append(f"non-root: the {what} must run as a non-root user")
        for c in pod_spec(doc).get("initContainers", []) + pod_spec(doc)["containers"]:
            own = c.get("securityContext", {})
            if own.get("allowPrivilegeEscalation") is not False or own.get("capabilities", {}).get("drop") != ["ALL"] \
                    or own.get("readOnlyRootFilesystem") is not True or own.get("runAsUser") == 0:
                problems.append(f"non-root: {c['name']} must drop every capability, never escalate, and keep "
                                "the root filesystem read-only")

    # Shared memory for the Python backend: memory-backed, at /dev/shm.
    shm = mount(triton, "/dev/shm")
    if not shm or volume(server, shm["name"]).get("emptyDir", {}).get("medium") != "Memory":
        problems.append("shm: /dev/shm must be a memory-backed emptyDir")

    # The serving pods read the repository the export wrote, read-only.
    served = mount(triton, REPOSITORY_MOUNT)
    claim = volume(server, served["name"]).get("persistentVolumeClaim", {}) if served else {}
    if not served or served.get("readOnly") is not True or claim.get("readOnly") is not True:
        problems.append("repository: the serving pods must mount the model repository read-only")

    # The export before serving: the Job writes that claim; the pods wait for its completion record.
    written = mount(export, REPOSITORY_MOUNT)
    job_claim = volume(job, written["name"]).get("persistentVolumeClaim", {}) if written else {}
    if not written or written.get("readOnly") or job_claim.get("claimName") != claim.get("claimName"):
        problems.append("export: the Job must write the claim the serving pods read, at the same path")
    waits = [c for c in pod_spec(server).get("initContainers", [])
             if f"{REPOSITORY_MOUNT}/{EXPORT_COMPLETE}" in " ".join(c.get("command", []) + c.get("args", []))]
    if not waits or not all(mount(c, REPOSITORY_MOUNT) for c in waits):
        problems.append(f"export: an init container must wait for {EXPORT_COMPLETE} before Triton starts")
    if job["spec"].get("backoffLimit") != 0:
        problems.append("export: a failed export must fail the Job (backoffLimit 0), not rebuild for minutes")
    if export.get("args") != [w.replace("${WEIGHTS:-yolo11n.pt}", "$(WEIGHTS)")
                              for w in compose_service("export")["command"]]:
        problems.append("export: the Job must run (args:) the command compose's export runs")
    if triton.get("args") != compose_service("triton")["command"]:
        problems.append("serving: the pods must run (args:) the command compose's triton runs")
    if pod_spec(job).get("nodeSelector") != pod_spec(server).get("nodeSelector"):
        problems.append("GPU kind: the Job must build on the GPU kind the pods serve on (same nodeSelector)")

    # The admin key from a Secret, never in the manifest; the restricted APIs stay off without it.
    key = next((e for e in triton.get("env", []) if e["name"] == "TRITON_ADMIN_KEY"), {})
    if "secretKeyRef" not in key.get("valueFrom", {}):
        problems.append("admin key: TRITON_ADMIN_KEY must come from a Secret")

    # Services: both select the serving pods; the headless one lists every pod for tools/detect.py.
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"].get("selector", {})
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            problems.append(f"services: {service['metadata']['name']} must select the serving pods")
    headless = [s for s in docs if s["kind"] == "Service" and s["spec"].get("clusterIP") == "None"]
    if not headless or not any(p.get("port") == 8001 and p.get("targetPort") in ("grpc", 8001)
                               for s in headless for p in s["spec"]["ports"]):
        problems.append("services: a headless Service must expose every pod's gRPC port")
    if job["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == pod_labels.get(
            "app.kubernetes.io/component"):
        problems.append("services: the export Job's pod must not carry the serving pods' labels")

    # Metrics: the PodMonitor scrapes the pods' metrics port; the budget keeps one pod; the HPA scales the
    # Deployment on the metric prometheus-adapter serves.
    monitor = by_kind(docs, "PodMonitor")
    if any(pod_labels.get(k) != v for k, v in monitor["spec"]["selector"].get("matchLabels", {}).items()) or \
            [e.get("port") for e in monitor["spec"]["podMetricsEndpoints"]] != ["metrics"]:
        problems.append("metrics: the PodMonitor must scrape the serving pods' metrics port")
    budget = by_kind(docs, "PodDisruptionBudget")
    if budget["spec"].get("minAvailable") != 1 or budget["spec"]["selector"]["matchLabels"].items() - pod_labels.items():
        problems.append("budget: a disruption must leave one serving pod")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    if (target["kind"], target["name"]) != ("Deployment", server["metadata"]["name"]):
        problems.append("autoscaling: the HPA must scale the serving Deployment")
    adapter = {rule["name"]["as"] for rule in yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]}
    names = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    if not names or names - adapter:
        problems.append(f"autoscaling: the HPA's metrics {sorted(names)} must be what prometheus-adapter serves "
                        f"({sorted(adapter)})")
    return problems


def test_every_promise_holds_in_every_overlay(rendered):
    for target, docs in rendered.items():
        assert promises(docs) == [], target


def _server(docs):
    return by_kind(docs, "Deployment")


def _triton(docs):
    return container(_server(docs), "triton")


def _job(docs):
    return by_kind(docs, "Job")


def _set(path_owner, key, value):
    path_owner[key] = value


BREAKS = {
    "GPU": lambda d: _triton(d)["resources"]["limits"].pop("nvidia.com/gpu"),
    "probes: livenessProbe": lambda d: _set(_triton(d)["livenessProbe"]["httpGet"], "port", 8002),
    # What the manifests said before: one model that cannot load restarted the pod every ten minutes.
    "probes: startupProbe": lambda d: _set(_triton(d)["startupProbe"]["httpGet"], "path", "/v2/health/ready"),
    "probes: livenessProbe must GET": lambda d: _set(_triton(d), "livenessProbe", {"exec": {"command": [
        "python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/models/"
                         "yolo11_pytorch/ready')"]}}),
    "readiness: the readinessProbe": lambda d: _set(_triton(d), "readinessProbe",
                                                     {"httpGet": {"path": "/v2/health/ready", "port": "http"}}),
    # Strict readiness as an exec probe: a pod with one failed model never Ready.
    "readiness: Ready while": lambda d: _set(_triton(d)["readinessProbe"]["exec"], "command", [
        "python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready')"]),
    # Ready while the server answers, whatever its models.
    "readiness: not Ready while": lambda d: _set(_triton(d)["readinessProbe"]["exec"], "command", [
        "python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live')"]),
    "readiness: READINESS_MODELS": lambda d: _set(by_kind(d, "ConfigMap", None, "yolo11-serving")["data"],
                                                  "READINESS_MODELS", "yolo11_pytorch,yolo11_onnx"),
    "entrypoint: triton": lambda d: _set(_triton(d), "command", _triton(d).pop("args")),
    "entrypoint: wait-for-export": lambda d: _set(pod_spec(_server(d))["initContainers"][0], "command",
                                                  pod_spec(_server(d))["initContainers"][0].pop("args")),
    "entrypoint: export": lambda d: _set(container(_job(d), "export"), "command", ["python3", "tools/export.py"]),
    "probes: the startup probe": lambda d: _set(_triton(d)["startupProbe"], "failureThreshold", 3),
    "non-root: the serving pod": lambda d: _set(pod_spec(_server(d))["securityContext"], "runAsUser", 0),
    "non-root: triton": lambda d: _set(_triton(d)["securityContext"], "readOnlyRootFilesystem", False),
    "shm": lambda d: _set(volume(_server(d), "dshm"), "emptyDir", {}),
    "repository": lambda d: _set(mount(_triton(d), REPOSITORY_MOUNT), "readOnly", False),
    "export: an init container": lambda d: _set(pod_spec(_server(d)), "initContainers", []),
    "export: the Job must write": lambda d: _set(volume(_job(d), "model-repository")["persistentVolumeClaim"],
                                                 "claimName", "elsewhere"),
    "export: a failed export": lambda d: _set(_job(d)["spec"], "backoffLimit", 6),
    "GPU kind": lambda d: _set(pod_spec(_job(d)), "nodeSelector", {"nvidia.com/gpu.product": "NVIDIA-A100"}),
    "serving: the pods must run": lambda d: _set(_triton(d), "args", _triton(d)["args"][:-2]),
    "admin key": lambda d: _set(_triton(d), "env", [{"name": "TRITON_ADMIN_KEY", "value": "in-the-manifest"}]),
    "services: yolo11-triton-pods": lambda d: _set(
        next(s for s in d if s["metadata"]["name"] == "yolo11-triton-pods")["spec"], "selector",
        {"app.kubernetes.io/component": "export"}),
    "services: a headless Service": lambda d: next(s for s in d if s["metadata"]["name"] == "yolo11-triton-pods")[
        "spec"].pop("clusterIP"),
    "metrics: the PodMonitor": lambda d: _set(by_kind(d, "PodMonitor")["spec"]["podMetricsEndpoints"][0], "port", "http"),
    "budget": lambda d: _set(by_kind(d, "PodDisruptionBudget")["spec"], "minAvailable", 0),
    "autoscaling: the HPA's metrics": lambda d: _set(by_kind(d, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"][
        "metric"], "name", "nv_inference_queue_duration_us"),
}


@pytest.mark.parametrize("promise", sorted(BREAKS))
def test_each_promise_fires_on_a_broken_copy(rendered, promise):
    docs = copy.deepcopy(rendered["overlays/h100"])
    BREAKS[promise](docs)
    problems = promises(docs)
    assert any(p.startswith(promise) for p in problems), problems
