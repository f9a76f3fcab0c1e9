"""The operator's Prometheus metrics, served on ``vividflow operator --metrics-port`` (default 9090),
named after controller-runtime's (reconciles by result, work queue depth, adds and retries) with the
``vividflow_operator_`` prefix, plus prometheus-client's process metrics.

Counters are incremented where the operator acts (a Job created, a VideoJob's end recorded: once,
since the outcome annotation is written once); figures of state (VideoJobs by phase, GPU Jobs held,
queue depth) are read from the controller's cache and queue when scraped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from vividflow.jobspec import LABEL_MODEL, ModelName
from vividflow.metrics import REQUEST_SECONDS_BUCKETS, Combined, JobTimings

if TYPE_CHECKING:
    from vividflow.operator.controller import Controller

RECONCILES = Counter(
    "vividflow_operator_reconciles",
    "Reconciles of one VideoJob, by result (success, error, conflict: still conflicting after retries).",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "vividflow_operator_reconcile_duration_seconds",
    "Time of one VideoJob reconcile.",
    buckets=REQUEST_SECONDS_BUCKETS,
)
JOBS_CREATED = Counter("vividflow_operator_jobs_created", "Runner Jobs created.", ["model"])
JOBS_SUSPENDED = Counter(
    "vividflow_operator_jobs_suspended",
    "Runner Jobs created suspended (held until GPU capacity admits them).",
    ["model"],
)
JOBS_DELETED = Counter("vividflow_operator_jobs_deleted", "Runner Jobs deleted (cancelled VideoJobs).")
GPU_JOBS_RESUMED = Counter(
    "vividflow_operator_gpu_jobs_resumed", "Suspended GPU Jobs resumed by the concurrency limit."
)
KUBE_API_ERRORS = Counter(
    "vividflow_operator_kube_api_errors",
    'Kubernetes API requests that failed, by verb and HTTP code ("connection": no answer).',
    ["verb", "code"],
)
WATCH_RESTARTS = Counter(
    "vividflow_operator_watch_restarts",
    "Watch streams that kopf restarted (resource version too old) or reconnected (inactive).",
    ["resource"],
)
VIDEOJOBS_FINISHED = Counter(
    "vividflow_operator_videojobs_finished",
    "VideoJobs whose end the operator recorded, by phase and failure reason (empty when completed).",
    ["model", "phase", "reason"],
)
JOB_TIMINGS = JobTimings("vividflow_operator_job", "completed VideoJobs")

_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def count_api_error(method: str, code: int | str) -> None:
    KUBE_API_ERRORS.labels(verb=_VERBS.get(method.upper(), method.lower()), code=str(code)).inc()


def count_job_created(manifest: Mapping[str, Any]) -> None:
    labels = (manifest.get("metadata") or {}).get("labels") or {}
    model = str(labels.get(LABEL_MODEL, "unknown"))
    JOBS_CREATED.labels(model=model).inc()
    if (manifest.get("spec") or {}).get("suspend"):
        JOBS_SUSPENDED.labels(model=model).inc()


def count_finished(model: str, phase: str, reason: str | None, metrics: Mapping[str, Any] | None) -> None:
    VIDEOJOBS_FINISHED.labels(model=model, phase=phase, reason=reason or "").inc()
    if phase == "Completed" and metrics:
        JOB_TIMINGS.observe(model, metrics)


class ControllerCollector:
    """VideoJobs by phase, GPU Jobs held and the work queue, read from ``controller`` when scraped."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    def collect(self) -> Iterable[Metric]:
        controller = self._controller
        cache = controller.cache
        phases: dict[str, int] = {}
        held = 0
        for key in cache.videojob_keys():
            body = cache.videojob(key)
            if body is not None:
                phase = str((body.get("status") or {}).get("phase") or "Queued")
                phases[phase] = phases.get(phase, 0) + 1
            job = cache.job(key)
            if job is not None and _held_gpu_job(job):
                held += 1
        videojobs = GaugeMetricFamily(
            "vividflow_operator_videojobs", "VideoJobs known to the operator, by phase.", labels=["phase"]
        )
        for phase, count in sorted(phases.items()):
            videojobs.add_metric([phase], count)
        yield videojobs
        yield GaugeMetricFamily(
            "vividflow_operator_gpu_jobs_held",
            "GPU Jobs suspended now, waiting for GPU capacity.",
            value=held,
        )
        queue = controller.queue
        name = [queue.name]
        depth = GaugeMetricFamily(
            "vividflow_operator_workqueue_depth", "Keys waiting or in progress.", labels=["name"]
        )
        depth.add_metric(name, queue.depth())
        adds = CounterMetricFamily(
            "vividflow_operator_workqueue_adds", "Keys added to the work queue.", labels=["name"]
        )
        adds.add_metric(name, queue.adds)
        retries = CounterMetricFamily(
            "vividflow_operator_workqueue_retries",
            "Keys queued again after their handler failed.",
            labels=["name"],
        )
        retries.add_metric(name, queue.errors)
        yield from (depth, adds, retries)


def _held_gpu_job(job: Mapping[str, Any]) -> bool:
    labels = (job.get("metadata") or {}).get("labels") or {}
    suspended = bool((job.get("spec") or {}).get("suspend"))
    return suspended and labels.get(LABEL_MODEL) == ModelName.WAN21.value


class _WatchRestarts(logging.Filter):
    """Counts kopf's watch-stream restarts from its own debug records (kopf exposes no hook for
    them); passes a record on only when debug logging was asked for."""

    MARKERS = ("Restarting the watch-stream for ", "is inactive, reconnecting")

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self._verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(marker in message for marker in self.MARKERS):
            resource = message.split(" for ", 1)[1].split(" ", 1)[0] if " for " in message else "unknown"
            WATCH_RESTARTS.labels(resource=resource).inc()
        return self._verbose or record.levelno >= logging.INFO


def count_watch_restarts(verbose: bool) -> None:
    logger = logging.getLogger("kopf._cogs.clients.watching")
    logger.setLevel(logging.DEBUG)
    logger.addFilter(_WatchRestarts(verbose))


def serve_metrics(controller: Controller, port: int, address: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port`` (in a daemon thread) for this process and ``controller``."""
    start_http_server(port, addr=address, registry=Combined(REGISTRY, ControllerCollector(controller)))
