"""The Grafana dashboard's every query runs on a real Prometheus scraping the real server under traffic."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import free_port

from python_models.export import repository as repo
from python_models.client import infer_grpc
from python_models.client.metrics import GPU_FAMILIES
from python_models.serving.status import wait_ready

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "yolo11-triton.json"
PROMETHEUS = Path(sys.executable).parent / "prometheus"
RATE_WINDOW = "20s"
TRAFFIC_S = 10
TRAFFIC_ENDED: list[float] = []
"""When ``scraped_under_traffic`` stopped its requests: a one-minute rate asked later may have nothing to rate."""
POD_LABELS = {"namespace": "yolo11", "pod": "yolo11-triton-0"}
ADAPTER_VALUES = ROOT / "deploy" / "kubernetes" / "autoscaling" / "prometheus-adapter-values.yaml"
PER_MODEL_PANELS = ("Requests per second", "Images per second", "Failed requests per second", "Average batch size",
                    "Queue time per request", "Compute time per request", "Pending requests")


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, with Grafana's variables as the dashboard's defaults resolve them."""
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$model", ".*").replace("$pod", ".*").replace("$__rate_interval", RATE_WINDOW)
            queries.append((panel["title"], expr))
    return queries


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(nv_[a-z_]+)\b", expr))


def query(prometheus_url: str, expr: str, at: float | None = None) -> dict:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr, **({"time": at} if at else {})})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # Prometheus answers 400 with a JSON error for bad PromQL
        return json.loads(exc.read())


def dashboard_problems(dashboard: dict, exported: set[str], prometheus_url: str, models: list[str]) -> list[str]:
    """What is wrong with the dashboard against this server; empty when every query works and has data."""
    problems = []
    for title, expr in dashboard_queries(dashboard):
        unknown = metric_names(expr) - exported - GPU_FAMILIES
        if unknown:
            problems.append(f"{title}: Triton exports no {sorted(unknown)}")
            continue
        answer = query(prometheus_url, expr)
        if answer.get("status") != "success":
            problems.append(f"{title}: {answer.get('error', answer)}")
            continue
        if metric_names(expr) & GPU_FAMILIES and not metric_names(expr) <= exported:
            continue  # GPU metrics: a CPU-profile server has none to return (see the test's note)
        series = answer["data"]["result"]
        if not series:
            problems.append(f"{title}: no data for {expr}")
        elif title in PER_MODEL_PANELS:
            seen = {s["metric"].get("model") for s in series}
            missing = [m for m in models if m not in seen]
            if missing:
                problems.append(f"{title}: no series for {missing}")
    return problems


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory):
    """Debian's prometheus with the project's prometheus.yml, retargeted to the test server, scraping every second."""
    if not PROMETHEUS.exists():
        pytest.fail("no .venv/bin/prometheus: run tools/install_prometheus.sh (tools/bootstrap.sh does)")
    work = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    (job,) = config["scrape_configs"]
    metrics = urllib.parse.urlparse(server.metrics_url)
    # The labels the Prometheus Operator's PodMonitor gives a Kubernetes serving pod's series
    # (deploy/kubernetes): what prometheus-adapter and the dashboard's pod variable select on.
    job["static_configs"] = [{"targets": [metrics.netloc], "labels": POD_LABELS}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(work / "prometheus.log", "wb")
    process = subprocess.Popen([str(PROMETHEUS), f"--config.file={work / 'prometheus.yml'}",
                                f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if not wait_ready(f"{url}/-/ready", process, timeout_s=60):
        process.kill()
        pytest.fail((work / "prometheus.log").read_text()[-3000:])
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def scraped_under_traffic(server, prometheus, samples):
    """Requests on every public model while Prometheus scrapes; returns the models that served."""
    stop = time.monotonic() + TRAFFIC_S
    models = list(repo.PUBLIC_MODELS)

    def drive(offset: int) -> None:
        client = server.grpc()
        i = offset
        while time.monotonic() < stop:
            infer_grpc(client, models[i % len(models)], [samples["bus.jpg"]])
            i += 1
        client.close()

    threads = [threading.Thread(target=drive, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    TRAFFIC_ENDED.append(time.time())
    up = query(prometheus, 'up{job="triton"}')["data"]["result"]
    assert up and up[0]["value"][1] == "1", f"Prometheus is not scraping the server: {up}"
    return models


def exported_families(server) -> set[str]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))


def test_every_dashboard_query_returns_data_for_the_loaded_models(server, prometheus, scraped_under_traffic):
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_families(server)
    assert dashboard_problems(dashboard, exported, prometheus, scraped_under_traffic) == []
    # What the dashboard asks of a GPU host (no data here: this server has no GPU to report).
    gpu = set().union(*(metric_names(e) for _, e in dashboard_queries(dashboard))) & GPU_FAMILIES
    assert gpu == {"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"}


def test_a_panel_on_a_metric_triton_does_not_export_fails(server, prometheus, scraped_under_traffic):
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard["panels"][0]["targets"][0]["expr"] = 'sum by (model) (rate(nv_inference_images_total[$__rate_interval]))'
    dashboard["panels"][1]["targets"][0]["expr"] = 'sum by (model) (rate(nv_inference_count{model=~"$model"}[$__rate_interval])'
    problems = dashboard_problems(dashboard, exported_families(server), prometheus, scraped_under_traffic)
    assert any("Triton exports no ['nv_inference_images_total']" in p for p in problems), problems
    assert any(p.startswith("Images per second:") and "parse error" in p for p in problems), problems


def test_dashboard_covers_what_operators_need():
    dashboard = json.loads(DASHBOARD.read_text())
    text = " ".join(e for _, e in dashboard_queries(dashboard))
    for family in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                   "nv_inference_exec_count", "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
                   "nv_inference_pending_request_count", "nv_gpu_utilization", "nv_gpu_memory_used_bytes",
                   "yolo11_dali_cpu_fallback_rows", "yolo11_dali_leaf_ready", "yolo11_track_streams",
                   "yolo11_track_objects"):
        assert family in text, family
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert sorted(variables) == ["model", "pod"], "per model, and per pod on Kubernetes"
    assert all(v["includeAll"] and v["allValue"] == ".*" for v in variables.values()), "All matches series without a pod label"
    assert all('pod=~"$pod"' in t["expr"] for p in dashboard["panels"] for t in p["targets"]), "every query per pod"
    assert all(p["datasource"]["uid"] == "prometheus" for p in dashboard["panels"])
    provisioned = yaml.safe_load((ROOT / "monitoring" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert provisioned["datasources"][0]["uid"] == "prometheus"


def adapter_problems(values: dict, exported: set[str], prometheus_url: str, at: float) -> list[str]:
    """What is wrong with the prometheus-adapter rules against this server's metrics, queried as the adapter queries
    them for one pod (its label matchers and grouping filled in); empty when each rule gives that pod a value."""
    problems = []
    matchers = ",".join(f'{k}="{v}"' for k, v in POD_LABELS.items())
    for rule in values["rules"]["custom"]:
        name = rule["name"]["as"]
        unknown = (metric_names(rule["seriesQuery"]) | metric_names(rule["metricsQuery"])) - exported
        if unknown:
            problems.append(f"{name}: Triton exports no {sorted(unknown)}")
            continue
        expr = rule["metricsQuery"].replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod")
        answer = query(prometheus_url, expr, at)
        if answer.get("status") != "success":
            problems.append(f"{name}: {answer.get('error', answer)}")
            continue
        series = answer["data"]["result"]
        if [s["metric"] for s in series] != [{"pod": POD_LABELS["pod"]}]:
            problems.append(f"{name}: expected one value for pod {POD_LABELS['pod']}, got {series}")
        elif not 0 < float(series[0]["value"][1]) < float("inf"):
            problems.append(f"{name}: {series[0]['value'][1]} under traffic (requests always queue a little)")
    return problems


def test_the_autoscaling_metric_is_computed_from_what_triton_exports(server, prometheus, scraped_under_traffic):
    """The HPA's metric (deploy/kubernetes/base/autoscaler.yaml), as prometheus-adapter computes it from the rule
    shipped for it, on a real Prometheus scraping the real server under traffic: one finite, positive value for the
    pod. A rule naming a metric Triton does not export, or a query that does not parse, is caught."""
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    exported = exported_families(server)
    at = TRAFFIC_ENDED[-1]  # the adapter asks while the pods serve; this test runs after the traffic stopped
    assert adapter_problems(values, exported, prometheus, at) == []
    broken = yaml.safe_load(ADAPTER_VALUES.read_text())
    broken["rules"]["custom"][0]["metricsQuery"] = broken["rules"]["custom"][0]["metricsQuery"].replace(
        "nv_inference_compute_infer_duration_us", "nv_inference_compute_duration_us")
    assert "Triton exports no ['nv_inference_compute_duration_us']" in adapter_problems(broken, exported, prometheus, at)[0]
    broken["rules"]["custom"][0]["metricsQuery"] = "max by (<<.GroupBy>>) (rate(nv_inference_queue_duration_us{<<.LabelMatchers>>}[1m])"
    assert "parse error" in adapter_problems(broken, exported, prometheus, at)[0]
