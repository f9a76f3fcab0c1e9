"""The API process's Prometheus metrics (``GET /metrics``), its embedded executor's included.

Job counters and timings are fed from the job events (:mod:`services.events`) after they commit, so a
job is counted once, by the process that changed it, whatever changed it (the executor, a cancel,
the cluster-mode mirror of VideoJob statuses). Queue depths are read from the database when scraped
(one grouped query), so every replica reports the same, true figures. With several API processes
(``VIVID_API_PROCESSES``) prometheus-client's multiprocess mode sums the processes: ``vividflow
serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before it starts them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, func, select

from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import Job
from vividflow.apiserver.services import events
from vividflow.jobspec import FailureReason, JobStatus, ModelName, refunds_credit
from vividflow.metrics import (
    JOB_SECONDS_BUCKETS,
    REQUEST_SECONDS_BUCKETS,
    Collecting,
    Combined,
    JobTimings,
)

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter(
    "vividflow_http_requests", "HTTP requests answered.", ["route", "method", "status_class"]
)
HTTP_REQUEST_SECONDS = Histogram(
    "vividflow_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer (streams: until they close).",
    ["route", "method"],
    buckets=REQUEST_SECONDS_BUCKETS,
)
JOBS_SUBMITTED = Counter("vividflow_jobs_submitted", "Jobs accepted.", ["model"])
JOBS_FINISHED = Counter(
    "vividflow_jobs_finished",
    "Jobs that ended, by final status and failure reason (empty for completed jobs).",
    ["model", "status", "reason"],
)
JOB_QUEUE_WAIT_SECONDS = Histogram(
    "vividflow_job_queue_wait_seconds",
    "Submission to the start of the run (the last start, for a job queued again).",
    ["model"],
    buckets=JOB_SECONDS_BUCKETS,
)
JOB_TIMINGS = JobTimings("vividflow_job", "completed jobs")
RATE_LIMIT_REFUSALS = Counter(
    "vividflow_rate_limit_refusals", "Requests refused by a rate limit, by the limit's kind.", ["limit"]
)
CREDITS_REFUNDED = Counter(
    "vividflow_credits_refunded", "Daily credits given back (cancelled or failed jobs)."
)
WEBHOOK_DELIVERIES = Counter(
    "vividflow_webhook_deliveries",
    "Webhook delivery attempts by outcome (delivered, retrying, failed, disabled, lease_lost).",
    ["outcome"],
)
SSE_STREAMS_OPEN = Gauge(
    "vividflow_sse_streams_open", "Status streams open now.", multiprocess_mode="livesum"
)
EXECUTOR_WORKERS_ALIVE = Gauge(
    "vividflow_executor_workers_alive",
    "Embedded executor worker processes alive now.",
    multiprocess_mode="livesum",
)
EXECUTOR_MODEL_LOADS = Counter(
    "vividflow_executor_model_loads", "Models loaded by embedded executor workers.", ["model"]
)
EXECUTOR_MODEL_LOAD_SECONDS = Histogram(
    "vividflow_executor_model_load_seconds",
    "Time to load a model in an embedded executor worker.",
    ["model"],
    buckets=JOB_SECONDS_BUCKETS,
)
EXECUTOR_WORKER_CRASHES = Counter(
    "vividflow_executor_worker_crashes", "Embedded executor worker processes that died under a job."
)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def observe_event(announced: events.Announced) -> None:
    """Count a committed job event of this process (an ``events`` listener)."""
    facts = announced.facts
    if facts is None:
        return
    model = facts.model
    if announced.kind == events.Kind.QUEUED and announced.seq == 1:
        JOBS_SUBMITTED.labels(model=model).inc()
    elif announced.kind == events.Kind.START:
        wait = _seconds_between(facts.created_at, facts.started_at)
        if wait is not None:
            JOB_QUEUE_WAIT_SECONDS.labels(model=model).observe(wait)
    elif announced.terminal:
        status = JobStatus(facts.status)
        reason = facts.failure_reason or ""
        JOBS_FINISHED.labels(model=model, status=status.value, reason=reason).inc()
        failure = FailureReason(reason) if reason in FailureReason._value2member_map_ else None
        if refunds_credit(status, failure, started=facts.started_at is not None):
            CREDITS_REFUNDED.inc()
        if status is JobStatus.COMPLETED and facts.metrics:
            JOB_TIMINGS.observe(model, facts.metrics)


class QueueCollector:
    """Queued and processing jobs by model, and the oldest queued job's age: read when scraped."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterable[Metric]:
        queued = GaugeMetricFamily("vividflow_jobs_queued", "Jobs waiting to run.", labels=["model"])
        processing = GaugeMetricFamily("vividflow_jobs_processing", "Jobs running now.", labels=["model"])
        oldest = GaugeMetricFamily(
            "vividflow_queue_oldest_age_seconds",
            "Age of the oldest queued job (0 when none waits).",
            labels=["model"],
        )
        active = [JobStatus.QUEUED.value, JobStatus.PROCESSING.value]
        query = (
            select(Job.model, Job.status, func.count(), func.min(Job.created_at))
            .where(Job.status.in_(active))
            .group_by(Job.model, Job.status)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        now = utcnow()
        counts = {(row[0], row[1]): (int(row[2]), row[3]) for row in rows}
        for model in ModelName:
            waiting, since = counts.get((model.value, JobStatus.QUEUED.value), (0, None))
            running, _ = counts.get((model.value, JobStatus.PROCESSING.value), (0, None))
            queued.add_metric([model.value], waiting)
            processing.add_metric([model.value], running)
            oldest.add_metric([model.value], _seconds_between(since, now) or 0.0)
        yield from (queued, processing, oldest)


def scrape_source(engine: Engine) -> Collecting:
    """Everything ``GET /metrics`` exposes: this process's metrics (all processes' in multiprocess
    mode) and the queue read from the database."""
    if os.environ.get(MULTIPROCESS_DIR_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Combined(registry, QueueCollector(engine))
    return Combined(REGISTRY, QueueCollector(engine))


def install() -> None:
    """Feed the job counters from this process's job events (idempotent)."""
    events.remove_listener(observe_event)
    events.add_listener(observe_event)
