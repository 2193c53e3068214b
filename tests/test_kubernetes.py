"""deploy/kubernetes: every overlay renders (kustomize build) and validates against the OpenAPI schema of a pinned
Kubernetes release; the promises the serving stack rests on hold, each shown to fire on a broken copy.

No cluster can run here. What Triton's metrics must offer the autoscaler is checked against a live server in
tests/test_monitoring.py (the prometheus-adapter rule, on a real Prometheus)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from python_models.build.export import EXPORT_COMPLETE

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUSTOMIZE = Path(sys.executable).parent / "kustomize"
KUBERNETES_VERSION = "1.34.0"
"""The release the manifests are validated against (kubernetes-validate ships its schemas)."""
CUSTOM_KINDS = {"PodMonitor"}
"""Prometheus Operator kinds: no schema in Kubernetes' own; the promises below check what they must say."""
REPOSITORY_MOUNT = "/opt/yolo11-triton/model_repository"
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

def by_kind(docs: list[dict], kind: str, component: str | None = None) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and (component is None or component_of(d) == component)]
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

    # Probes on Triton's health endpoints and its HTTP port.
    http = named_port(triton, "http")
    if http != 8000 or named_port(triton, "grpc") != 8001 or named_port(triton, "metrics") != 8002:
        problems.append("ports: http 8000, grpc 8001 and metrics 8002 as tools/serve.py serves them")
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        get = triton.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("http", http):
            problems.append(f"probes: {probe} must GET {path} on the http port")
    startup = triton.get("startupProbe", {})
    if startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) < 300:
        problems.append("probes: the startup probe must allow the warm-up (compose's start_period, 300 s) at least")

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
    if export.get("command") != [w.replace("${WEIGHTS:-yolo11n.pt}", "$(WEIGHTS)")
                                 for w in compose_service("export")["command"]]:
        problems.append("export: the Job must run the command compose's export runs")
    if triton.get("command") != compose_service("triton")["command"]:
        problems.append("serving: the pods must run the command compose's triton runs")
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
    "probes: readinessProbe": lambda d: _set(_triton(d)["readinessProbe"]["httpGet"], "path", "/v2/health/live"),
    "probes: livenessProbe": lambda d: _set(_triton(d)["livenessProbe"]["httpGet"], "port", 8002),
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
    "serving: the pods must run": lambda d: _set(_triton(d), "command", _triton(d)["command"][:-2]),
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
