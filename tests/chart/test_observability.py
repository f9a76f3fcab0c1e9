"""The chart's observability objects, rendered by the real helm: metrics settings, the operator metrics
Service, the ServiceMonitors, the PrometheusRule (checked and unit-tested by the real promtool) and the
Grafana dashboard (its queries parsed by promtool as recording rules).

Every query of the dashboard and the alerts may only name series of the metric catalogue
(tests/chart/metric_names.py) and their labels, so a metric renamed in the code breaks these tests.
promtool comes from VIVID_PROMETHEUS_DIR (scripts/prometheus.sh path; the Makefile sets it) or PATH; the
promtool tests are skipped only when neither has it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.chart import (
    CHART_DIR,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    HelmError,
    Obj,
    find,
    load_yaml,
    render,
    run_helm,
)
from tests.chart.metric_names import (
    ALL_SERIES,
    API_SERIES,
    OPERATOR_SERIES,
    SCRAPE_METRICS,
    TARGET_LABELS,
)
from tests.chart.test_render import configmap_settings

FULLNAME = f"{RELEASE}-vividflow"
DASHBOARD_FILE = CHART_DIR / "dashboards" / "vividflow.json"
ALERTS = [
    "VividFlowQueueStalled",
    "VividFlowJobFailureRatioHigh",
    "VividFlowOperatorReconcileErrors",
    "VividFlowOperatorMetricsAbsent",
]
ALL_ON = {
    "metrics.serviceMonitor.enabled": True,
    "metrics.prometheusRule.enabled": True,
    "metrics.dashboard.enabled": True,
}
MONITORING = "monitoring.coreos.com/v1"


@pytest.fixture(scope="module")
def default(helm: Path) -> list[Obj]:
    return render(helm)


@pytest.fixture(scope="module")
def all_on(helm: Path) -> list[Obj]:
    return render(helm, sets=ALL_ON)


@pytest.fixture(scope="session")
def promtool() -> Path:
    directory = os.environ.get("VIVID_PROMETHEUS_DIR")
    if directory:
        path = Path(directory) / "promtool"
        if not os.access(path, os.X_OK):
            pytest.fail(f"VIVID_PROMETHEUS_DIR={directory} has no promtool", pytrace=False)
        return path
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "promtool not found: VIVID_PROMETHEUS_DIR is unset and promtool is not on PATH "
            "(export VIVID_PROMETHEUS_DIR=$(bash scripts/prometheus.sh path | tail -n1))"
        )
    return Path(found)


def run_promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=60, check=False)


def check_rules(promtool: Path, groups: Any, path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(yaml.safe_dump(groups, sort_keys=False))
    return run_promtool(promtool, "check", "rules", str(path))


def kinds_of(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def operator_container(objects: list[Obj]) -> Obj:
    container: Obj = find(objects, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def rule_groups(objects: list[Obj]) -> Any:
    return find(objects, "PrometheusRule", FULLNAME)["spec"]


def alerts(objects: list[Obj]) -> dict[str, Obj]:
    return {rule["alert"]: rule for group in rule_groups(objects)["groups"] for rule in group["rules"]}


# -- PromQL, as far as the catalogue check needs it ------------------------------------------------------

#: Functions, aggregations and keywords the chart's queries may use (anything else is taken for a metric).
PROMQL_WORDS = frozenset(
    {
        *("sum", "max", "min", "avg", "count", "topk", "bottomk", "sort_desc", "sort"),
        *("rate", "irate", "increase", "histogram_quantile", "absent", "clamp_min"),
        *("by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"),
        *("and", "or", "unless"),
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w:.])[a-zA-Z_:][a-zA-Z0-9_:]*")


@dataclass
class Query:
    """The metric names, selectors (name and matchers) and grouping labels of one PromQL expression."""

    names: set[str] = field(default_factory=set)
    selectors: list[tuple[str, list[tuple[str, str, str]]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


def scan(expr: str) -> Query:
    query = Query()
    for match in _SELECTOR.finditer(expr):
        query.selectors.append((match.group(1) or "", _MATCHER.findall(match.group(2))))
    rest = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", expr)
    rest = _RANGE.sub(" ", rest)
    for match in _GROUPING.finditer(rest):
        query.grouping |= {label.strip() for label in match.group(1).split(",") if label.strip()}
    rest = _STRING.sub(" ", _GROUPING.sub(" ", rest))
    query.names = set(_IDENT.findall(rest)) - PROMQL_WORDS
    return query


def catalogue_problems(expr: str) -> list[str]:
    """What in ``expr`` is not in the metric catalogue: unknown series, unknown labels, nameless selectors."""
    query = scan(expr)
    problems = [f"unknown series {name}" for name in sorted(query.names - set(ALL_SERIES))]
    if not query.names:
        problems.append("no series")
    if problems:
        return problems  # the labels of an unknown series are unknown too
    for name, matchers in query.selectors:
        if not name:
            problems.append("a selector without a metric name")
            continue
        for label, _, _ in matchers:
            if label not in ALL_SERIES[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
    known = TARGET_LABELS.union(*(ALL_SERIES[name] for name in query.names))
    problems += [f"grouping by unknown label {label}" for label in sorted(query.grouping - known)]
    return problems


def test_the_catalogue_check_catches_renames() -> None:
    """Guard against a vacuous check: a renamed metric, a renamed label and a made-up label all fail it."""
    good = 'sum by (model) (rate(vividflow_jobs_finished_total{namespace="x", status="failed"}[5m]))'
    assert catalogue_problems(good) == []
    assert scan(good).names == {"vividflow_jobs_finished_total"}
    assert catalogue_problems(good.replace("jobs_finished", "jobs_done")) == [
        "unknown series vividflow_jobs_done_total"
    ]
    assert catalogue_problems(good.replace("status=", "state=")) == [
        "vividflow_jobs_finished_total has no label state"
    ]
    assert catalogue_problems(good.replace("by (model)", "by (gpu)")) == ["grouping by unknown label gpu"]
    histogram = (
        "histogram_quantile(0.99, sum by (le, route) "
        "(rate(vividflow_http_request_duration_seconds_bucket[5m])))"
    )
    assert catalogue_problems(histogram) == []
    assert catalogue_problems(histogram.replace("_bucket", "")) == [
        "unknown series vividflow_http_request_duration_seconds"
    ]


# -- settings, the operator's port and Service ---------------------------------------------------------


def test_metrics_and_json_logs_are_on_by_default(default: list[Obj], monkeypatch: pytest.MonkeyPatch) -> None:
    data = find(default, "ConfigMap", FULLNAME)["data"]
    assert data["VIVID_METRICS_ENABLED"] == "true"
    assert data["VIVID_LOG_FORMAT"] == "json"
    settings = configmap_settings(default, monkeypatch)
    assert settings.metrics_enabled is True and settings.log_format == "json"
    assert settings.runner_env["VIVID_LOG_FORMAT"] == "json"  # runner Pods log the same way
    operator = operator_container(default)
    assert "--metrics-port=9090" in operator["args"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in operator["ports"]
    service = find(default, "Service", f"{FULLNAME}-operator-metrics")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    # The scraping, alerting and charting objects need CRDs or a sidecar: all off by default.
    assert not kinds_of(default, "ServiceMonitor") and not kinds_of(default, "PrometheusRule")
    assert [o["metadata"]["name"] for o in kinds_of(default, "ConfigMap")] == [FULLNAME]


@pytest.mark.parametrize("log_format", ["auto", "text"])
def test_log_format(helm: Path, log_format: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(helm, sets={"logFormat": log_format})
    assert configmap_settings(objects, monkeypatch).log_format == log_format


def test_metrics_can_be_turned_off(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(helm, sets={"metrics.enabled": False})
    assert configmap_settings(objects, monkeypatch).metrics_enabled is False
    operator = operator_container(objects)
    assert "--metrics-port=0" in operator["args"]
    assert [p["name"] for p in operator["ports"]] == ["liveness"]
    assert not [o for o in objects if o["metadata"]["name"] == f"{FULLNAME}-operator-metrics"]


def test_the_operator_metrics_port_is_a_value(helm: Path) -> None:
    objects = render(helm, sets={"operator.metricsPort": 9100})
    operator = operator_container(objects)
    assert "--metrics-port=9100" in operator["args"]
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in operator["ports"]
    assert find(objects, "Service", f"{FULLNAME}-operator-metrics")["spec"]["ports"][0]["port"] == 9100


# -- ServiceMonitors ---------------------------------------------------------------------------------


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_service_monitors_select_the_metrics_ports(all_on: list[Obj]) -> None:
    """Each ServiceMonitor selects exactly one Service, by a port name it has, whose target port is the
    container port the process serves its metrics on."""
    monitors = {o["metadata"]["name"]: o for o in kinds_of(all_on, "ServiceMonitor")}
    assert sorted(monitors) == [f"{FULLNAME}-api", f"{FULLNAME}-operator"]
    expected = {
        f"{FULLNAME}-api": (f"{FULLNAME}-api", "http", ["serve", "--host", "0.0.0.0", "--port", "8000"]),
        f"{FULLNAME}-operator": (f"{FULLNAME}-operator-metrics", "metrics", ["--metrics-port=9090"]),
    }
    services = kinds_of(all_on, "Service")
    deployments = kinds_of(all_on, "Deployment")
    for name, monitor in monitors.items():
        service_name, port_name, args = expected[name]
        assert monitor["apiVersion"] == MONITORING
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        selected = [s for s in services if _matches(spec["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert [s["metadata"]["name"] for s in selected] == [service_name], name
        (endpoint,) = spec["endpoints"]
        assert endpoint == {
            "port": port_name,
            "path": "/metrics",
            "scheme": "http",
            "interval": "30s",
            "scrapeTimeout": "10s",
        }
        (service_port,) = [p for p in selected[0]["spec"]["ports"] if p["name"] == port_name]
        pods = [
            d
            for d in deployments
            if _matches(selected[0]["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(pods) == 1, name
        container = pods[0]["spec"]["template"]["spec"]["containers"][0]
        (container_port,) = [p for p in container["ports"] if p["name"] == service_port["targetPort"]]
        assert all(arg in container["args"] for arg in args), container["args"]
        assert str(container_port["containerPort"]) in " ".join(args).replace("=", " ").split()


def test_service_monitor_options(helm: Path) -> None:
    sets: dict[str, Any] = {
        "metrics.serviceMonitor.enabled": True,
        "metrics.serviceMonitor.interval": "",
        "metrics.serviceMonitor.scrapeTimeout": "5s",
        "metrics.serviceMonitor.labels.release": "kube-prometheus-stack",
    }
    for monitor in kinds_of(render(helm, sets=sets), "ServiceMonitor"):
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert "interval" not in endpoint and endpoint["scrapeTimeout"] == "5s"


#: The fields of the Prometheus Operator's monitoring.coreos.com/v1 objects the chart uses.
KNOWN_FIELDS = {
    "ServiceMonitor": {"selector", "namespaceSelector", "endpoints"},
    "endpoint": {"port", "path", "scheme", "interval", "scrapeTimeout"},
    "PrometheusRule": {"groups"},
    "group": {"name", "rules"},
    "rule": {"alert", "expr", "for", "labels", "annotations"},
}


def test_helm_lint_with_everything_on(helm: Path) -> None:
    flags = [arg for key in ALL_ON for arg in ("--set", f"{key}=true")]
    out = run_helm(helm, "lint", str(CHART_DIR), "--strict", "--kube-version", KUBE_VERSION, *flags)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_objects_are_valid(all_on: list[Obj]) -> None:
    for obj in all_on:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("ServiceMonitor", "PrometheusRule"):
            assert obj["apiVersion"] == MONITORING, where
            assert set(obj["spec"]) <= KNOWN_FIELDS[obj["kind"]], where
            assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, where
        elif obj["kind"] in ("Service", "ConfigMap", "Deployment"):
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    for monitor in kinds_of(all_on, "ServiceMonitor"):
        assert all(set(e) <= KNOWN_FIELDS["endpoint"] for e in monitor["spec"]["endpoints"])
    for group in rule_groups(all_on)["groups"]:
        assert set(group) <= KNOWN_FIELDS["group"]
        assert all(set(rule) <= KNOWN_FIELDS["rule"] for rule in group["rules"])


# -- the PrometheusRule ------------------------------------------------------------------------------


#: Other thresholds and labels (a values file: `--set` would pass 0.5 as a string).
CUSTOM_RULES: Obj = {
    "queueAgeMinutes": 5,
    "jobFailureRatio": 0.5,
    "jobFailureMinJobs": 10,
    "alertLabels": {"team": "video", "severity": "critical"},
    "labels": {"release": "kube-prometheus-stack"},
}


@pytest.mark.parametrize("custom", [False, True], ids=["defaults", "custom"])
def test_the_alert_rules_pass_promtool(helm: Path, promtool: Path, tmp_path: Path, custom: bool) -> None:
    values = tmp_path / "values.yaml"
    rule_values = {"enabled": True, **(CUSTOM_RULES if custom else {})}
    values.write_text(yaml.safe_dump({"metrics": {"prometheusRule": rule_values}}))
    objects = render(helm, [values])
    result = check_rules(promtool, rule_groups(objects), tmp_path / "vividflow.rules.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout + result.stderr
    rules = alerts(objects)
    assert list(rules) == ALERTS
    assert rules["VividFlowQueueStalled"]["expr"].endswith(" > 300" if custom else " > 900")
    assert (" > 0.5\n" if custom else " > 0.2\n") in rules["VividFlowJobFailureRatioHigh"]["expr"]
    assert rules["VividFlowJobFailureRatioHigh"]["expr"].endswith(" >= 10" if custom else " >= 3")
    for rule in rules.values():
        assert rule["labels"]["severity"] == ("critical" if custom else "warning")
        assert rule["labels"].get("team") == ("video" if custom else None)
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    labels = find(objects, "PrometheusRule", FULLNAME)["metadata"]["labels"]
    assert labels.get("release") == ("kube-prometheus-stack" if custom else None)


def test_promtool_rejects_a_broken_rule(promtool: Path, tmp_path: Path) -> None:
    """Guard against a vacuous check."""
    broken = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "sum by (model (up)"}]}]}
    assert check_rules(promtool, broken, tmp_path / "broken.yaml").returncode != 0


def test_alert_queries_use_the_catalogue_and_this_releases_series(all_on: list[Obj]) -> None:
    """Every series an alert reads is in the catalogue and selected as the ServiceMonitors label it:
    namespace = the release's, job = the name of the Service that serves it."""
    jobs = {"api": f"{FULLNAME}-api", "operator": f"{FULLNAME}-operator-metrics"}
    for name, rule in alerts(all_on).items():
        assert catalogue_problems(rule["expr"]) == [], name
        selectors = scan(rule["expr"]).selectors
        assert selectors, name
        for metric, matchers in selectors:
            component = "api" if metric in API_SERIES else "operator"
            assert metric in API_SERIES or metric in OPERATOR_SERIES or metric in SCRAPE_METRICS
            assert ("namespace", "=", NAMESPACE) in matchers, f"{name}: {metric}"
            assert ("job", "=", jobs[component]) in matchers, f"{name}: {metric}"


def test_no_absent_alert_without_an_operator(helm: Path) -> None:
    objects = render(helm, sets={"metrics.prometheusRule.enabled": True, "operator.replicas": 0})
    assert list(alerts(objects)) == ALERTS[:-1]


def _series(metric: str, values: str, **labels: str) -> Obj:
    selector = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{metric}{{{selector}}}", "values": values}


def test_the_alerts_fire_when_they_should(all_on: list[Obj], promtool: Path, tmp_path: Path) -> None:
    """promtool's rule unit tests on the rendered rules (without their annotations, checked above), with
    the default thresholds: 15 minutes, 20 % of at least 3 jobs."""
    groups = rule_groups(all_on)
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    api = {"namespace": NAMESPACE, "job": f"{FULLNAME}-api", "pod": "api-1"}
    operator = {"namespace": NAMESPACE, "job": f"{FULLNAME}-operator-metrics", "pod": "operator-1"}
    finished = "vividflow_jobs_finished_total"
    series = [
        # wan2.1's oldest queued job ages from t=0; veo3.1's queue is empty.
        _series("vividflow_queue_oldest_age_seconds", "0+60x40", model="wan2.1", **api),
        _series("vividflow_queue_oldest_age_seconds", "0x40", model="veo3.1", **api),
        # wan2.1: one job completes a minute; from t=20m one also fails a minute (50 %).
        _series(finished, "0+1x40", model="wan2.1", status="completed", reason="", **api),
        _series(finished, "0x20 1+1x20", model="wan2.1", status="failed", reason="timeout", **api),
        # Cancelled jobs do not count as failures, nor a single failed veo3.1 job (fewer than 3 finished).
        _series(finished, "0+5x40", model="wan2.1", status="cancelled", reason="cancelled", **api),
        _series(finished, "0x10 1x30", model="veo3.1", status="failed", reason="upstream_error", **api),
        # The operator's reconciles fail from t=0; it stops being scraped (up 0) at t=21m.
        _series("vividflow_operator_reconciles_total", "0+1x40", result="error", **operator),
        _series("vividflow_operator_reconciles_total", "0+10x40", result="success", **operator),
        _series("up", "1x20 0x20", **operator),
    ]
    warning = {"severity": "warning", "namespace": NAMESPACE}

    def case(minutes: int, alert: str, *expected: dict[str, str]) -> Obj:
        return {
            "eval_time": f"{minutes}m",
            "alertname": alert,
            "exp_alerts": [{"exp_labels": warning | labels} for labels in expected],
        }

    tests = [
        case(15, "VividFlowQueueStalled"),  # 900 s: not yet older than 15 minutes
        case(16, "VividFlowQueueStalled"),  # older, but pending for 1m
        case(17, "VividFlowQueueStalled", {"model": "wan2.1"}),
        case(15, "VividFlowJobFailureRatioHigh"),
        case(35, "VividFlowJobFailureRatioHigh", {"model": "wan2.1"}),
        case(5, "VividFlowOperatorReconcileErrors"),  # pending for 10m
        case(20, "VividFlowOperatorReconcileErrors", {}),
        case(20, "VividFlowOperatorMetricsAbsent"),
        case(24, "VividFlowOperatorMetricsAbsent"),  # pending for 5m
        case(27, "VividFlowOperatorMetricsAbsent", {}),
    ]
    unit = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": tests}],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(unit, sort_keys=False))
    result = run_promtool(promtool, "test", "rules", str(tmp_path / "test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


# -- the Grafana dashboard ---------------------------------------------------------------------------


def dashboard_json() -> Obj:
    dashboard: Obj = json.loads(DASHBOARD_FILE.read_text())
    return dashboard


def all_panels(panels: list[Obj]) -> list[Obj]:
    out: list[Obj] = []
    for panel in panels:
        out.append(panel)
        out += all_panels(panel.get("panels", []))
    return out


def dashboard_exprs(dashboard: Obj) -> list[str]:
    return [t["expr"] for p in all_panels(dashboard["panels"]) for t in p.get("targets", [])]


#: What Grafana puts into a query before Prometheus sees it, as plausible values.
GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "namespace": NAMESPACE}


def substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(f"${{{name}}}", value)
        expr = re.sub(rf"\${re.escape(name)}\b", value, expr)
    return expr


def test_the_dashboard_has_the_panels(all_on: list[Obj]) -> None:
    dashboard = dashboard_json()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert set(variables) - {"datasource"} <= set(GRAFANA_VARIABLES)
    panels = [p for p in all_panels(dashboard["panels"]) if p["type"] != "row"]
    titles = " | ".join(p["title"] for p in panels)
    for wanted in [
        "Jobs per minute by status",
        "Queue depth by model",
        "Total time p50 / p99 by model",
        "Queue wait p50 / p99 by model",
        "Generation time p50 / p99 by model",
        "GPU admission: jobs held",
        "Failure reasons",
        "API latency p50 / p99 by route",
        "HTTP 5xx ratio",
    ]:
        assert wanted in titles
    ids = [p["id"] for p in all_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip(), panel["title"]
    # No two panels overlap in the 24-column grid.
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_dashboard_queries_parse_with_promtool(promtool: Path, tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, as a recording rule that promtool checks."""
    exprs = [substitute(expr) for expr in dashboard_exprs(dashboard_json())]
    assert len(exprs) >= 20
    assert not [e for e in exprs if "$" in e]
    groups = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{n}", "expr": e} for n, e in enumerate(exprs, 1)],
            }
        ]
    }
    result = check_rules(promtool, groups, tmp_path / "dashboard.rules.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout + result.stderr


def test_the_dashboard_queries_use_the_catalogue() -> None:
    dashboard = dashboard_json()
    for expr in dashboard_exprs(dashboard):
        assert catalogue_problems(substitute(expr)) == [], expr
        for _, matchers in scan(expr).selectors:
            # Scoped to one namespace: the dashboard variable's (the release namespace by default).
            assert ("namespace", "=", "$namespace") in matchers, expr
    # The namespace variable's own query (Grafana's label_values(metric, label)).
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"])
            assert match, variable["query"]
            assert match.group(1) in ALL_SERIES and match.group(2) in TARGET_LABELS


def test_the_dashboard_configmap(all_on: list[Obj], helm: Path) -> None:
    configmap = find(all_on, "ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "annotations" not in configmap["metadata"]
    ((key, text),) = configmap["data"].items()
    assert key == f"{NAMESPACE}-{FULLNAME}.json"
    shipped = json.loads(text)
    # The file as it is, but for this release's uid, title and default namespace.
    expected = dashboard_json()
    uid = shipped["uid"]
    assert re.fullmatch(r"vividflow-[0-9a-f]{12}", uid) and len(uid) <= 40
    expected["uid"] = uid
    expected["title"] = f"Vivid Flow ({NAMESPACE}/{RELEASE})"
    for variable in expected["templating"]["list"]:
        if variable["name"] == "namespace":
            variable["current"] = {"selected": True, "text": NAMESPACE, "value": NAMESPACE}
    assert shipped == expected
    # Another release gets another dashboard; the label, its value and the folder are values.
    sets: dict[str, Any] = {
        "metrics.dashboard.enabled": True,
        "metrics.dashboard.labelName": "example.com/dashboard",
        "metrics.dashboard.labelValue": "vivid",
        "metrics.dashboard.folder": "Video generation",
    }
    other = find(render(helm, sets=sets, namespace="staging"), "ConfigMap", f"{FULLNAME}-dashboard")
    assert other["metadata"]["labels"]["example.com/dashboard"] == "vivid"
    assert "grafana_dashboard" not in other["metadata"]["labels"]
    assert other["metadata"]["annotations"] == {"grafana_folder": "Video generation"}
    ((other_key, other_text),) = other["data"].items()
    assert other_key == f"staging-{FULLNAME}.json" and json.loads(other_text)["uid"] != uid


# -- values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        ({"logFormat": "xml"}, "logFormat"),
        ({"metrics.enabled": "yes"}, "enabled"),
        ({"operator.metricsPort": 80}, "metricsPort"),
        ({"metrics.serviceMonitor.interval": "30 seconds"}, "interval"),
        ({"metrics.serviceMonitor.scrapeTimeout": "10"}, "scrapeTimeout"),
        ({"metrics.serviceMonitor.labels.bad label": "x"}, "bad label"),
        ({"metrics.prometheusRule.queueAgeMinutes": 0}, "queueAgeMinutes"),
        ({"metrics.prometheusRule.jobFailureRatio": 2}, "jobFailureRatio"),
        ({"metrics.prometheusRule.jobFailureMinJobs": 0}, "jobFailureMinJobs"),
        ({"metrics.prometheusRule.alertLabels.bad-name": "x"}, "bad-name"),
        ({"metrics.dashboard.labelName": "not a label"}, "labelName"),
        ({"metrics.dashboard.labelValue": "not a value"}, "labelValue"),
        ({"metrics.dashboard.unknown": True}, "unknown"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_the_schema_rejects(helm: Path, sets: dict[str, Any], fragment: str) -> None:
    with pytest.raises(HelmError) as failure:
        render(helm, sets=sets)
    message = str(failure.value)
    assert "schema" in message.lower() and fragment in message, message


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        *(
            ({"metrics.enabled": False, f"metrics.{name}.enabled": True}, f"metrics.{name}.enabled needs")
            for name in ("serviceMonitor", "prometheusRule", "dashboard")
        ),
        ({"operator.metricsPort": 8080}, "must differ"),
    ],
    ids=["serviceMonitor", "prometheusRule", "dashboard", "ports"],
)
def test_the_templates_reject(helm: Path, sets: dict[str, Any], fragment: str) -> None:
    with pytest.raises(HelmError, match=fragment):
        render(helm, sets=sets)


def test_the_defaults_are_what_the_values_file_says() -> None:
    metrics = load_yaml(CHART_DIR / "values.yaml")["metrics"]
    assert metrics["enabled"] is True
    assert not any(metrics[name]["enabled"] for name in ("serviceMonitor", "prometheusRule", "dashboard"))
    rule = metrics["prometheusRule"]
    assert (rule["queueAgeMinutes"], rule["jobFailureRatio"], rule["jobFailureMinJobs"]) == (15, 0.2, 3)
