"""The metric catalogue: every series the API and the operator export, with its labels.

The chart's dashboard (charts/vividflow/dashboards/vividflow.json) and alerts
(charts/vividflow/rules/vividflow.rules.yaml) may only query these, so renaming a metric or a label in
the code without updating the chart (and this catalogue) fails tests/chart/test_observability.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Metric:
    kind: Literal["counter", "gauge", "histogram"]
    labels: frozenset[str] = frozenset()


def _m(kind: Literal["counter", "gauge", "histogram"], *labels: str) -> Metric:
    return Metric(kind, frozenset(labels))


#: Served by the API process at GET /metrics of its HTTP port (the API Service's port `http`).
API_METRICS: dict[str, Metric] = {
    "vividflow_http_requests_total": _m("counter", "route", "method", "status_class"),
    "vividflow_http_request_duration_seconds": _m("histogram", "route", "method"),
    "vividflow_jobs_submitted_total": _m("counter", "model"),
    "vividflow_jobs_finished_total": _m("counter", "model", "status", "reason"),
    "vividflow_jobs_queued": _m("gauge", "model"),
    "vividflow_jobs_processing": _m("gauge", "model"),
    "vividflow_queue_oldest_age_seconds": _m("gauge", "model"),
    "vividflow_job_queue_wait_seconds": _m("histogram", "model"),
    "vividflow_job_spin_up_seconds": _m("histogram", "model"),
    "vividflow_job_generation_seconds": _m("histogram", "model"),
    "vividflow_job_total_seconds": _m("histogram", "model"),
    "vividflow_job_step_seconds": _m("histogram", "model"),
    "vividflow_job_peak_gpu_memory_bytes": _m("histogram", "model"),
    "vividflow_rate_limit_refusals_total": _m("counter", "limit"),
    "vividflow_credits_refunded_total": _m("counter"),
    "vividflow_webhook_deliveries_total": _m("counter", "outcome"),
    "vividflow_sse_streams_open": _m("gauge"),
    "vividflow_executor_workers_alive": _m("gauge"),
    "vividflow_executor_model_loads_total": _m("counter", "model"),
    "vividflow_executor_model_load_seconds": _m("histogram", "model"),
    "vividflow_executor_worker_crashes_total": _m("counter"),
}

#: Served by `vividflow operator --metrics-port` (the port `metrics` of the operator metrics Service).
OPERATOR_METRICS: dict[str, Metric] = {
    "vividflow_operator_reconciles_total": _m("counter", "result"),
    "vividflow_operator_reconcile_duration_seconds": _m("histogram"),
    "vividflow_operator_workqueue_depth": _m("gauge", "name"),
    "vividflow_operator_workqueue_adds_total": _m("counter", "name"),
    "vividflow_operator_workqueue_retries_total": _m("counter", "name"),
    "vividflow_operator_videojobs": _m("gauge", "phase"),
    "vividflow_operator_jobs_created_total": _m("counter", "model"),
    "vividflow_operator_jobs_suspended_total": _m("counter", "model"),
    "vividflow_operator_jobs_deleted_total": _m("counter"),
    "vividflow_operator_gpu_jobs_held": _m("gauge"),
    "vividflow_operator_gpu_jobs_resumed_total": _m("counter"),
    "vividflow_operator_kube_api_errors_total": _m("counter", "verb", "code"),
    "vividflow_operator_watch_restarts_total": _m("counter", "resource"),
    "vividflow_operator_videojobs_finished_total": _m("counter", "model", "phase", "reason"),
    "vividflow_operator_job_generation_seconds": _m("histogram", "model"),
    "vividflow_operator_job_spin_up_seconds": _m("histogram", "model"),
    "vividflow_operator_job_step_seconds": _m("histogram", "model"),
    "vividflow_operator_job_peak_gpu_memory_bytes": _m("histogram", "model"),
}

#: prometheus_client's process collector, in both processes.
PROCESS_METRICS: dict[str, Metric] = {
    "process_cpu_seconds_total": _m("counter"),
    "process_resident_memory_bytes": _m("gauge"),
    "process_virtual_memory_bytes": _m("gauge"),
    "process_start_time_seconds": _m("gauge"),
    "process_open_fds": _m("gauge"),
    "process_max_fds": _m("gauge"),
}

#: Made by Prometheus itself for every scrape target.
SCRAPE_METRICS: dict[str, Metric] = {"up": _m("gauge")}

#: The labels the Prometheus Operator gives every series scraped through a ServiceMonitor.
TARGET_LABELS = frozenset({"namespace", "job", "instance", "service", "endpoint", "pod", "container"})


def series(metrics: dict[str, Metric]) -> dict[str, frozenset[str]]:
    """Series name -> its labels (without the target labels): a histogram is _bucket (+ le), _sum, _count."""
    out: dict[str, frozenset[str]] = {}
    for name, metric in metrics.items():
        if metric.kind == "histogram":
            out[f"{name}_bucket"] = metric.labels | {"le"}
            out[f"{name}_sum"] = metric.labels
            out[f"{name}_count"] = metric.labels
        else:
            assert (metric.kind == "counter") == name.endswith("_total"), name
            out[name] = metric.labels
    return out


API_SERIES = series(API_METRICS)
OPERATOR_SERIES = series(OPERATOR_METRICS)
ALL_SERIES = API_SERIES | OPERATOR_SERIES | series(PROCESS_METRICS) | series(SCRAPE_METRICS)
