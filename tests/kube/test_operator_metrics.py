"""The operator's metrics without a cluster: what its collector reads from the cache and the queue,
kopf's watch restarts counted from its own log records, and the served text format.

(tests/kube/test_observability_e2e.py has a real Prometheus scrape the operator during real jobs.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s

from tests.metrics_text import value
from tests.ports import free_port
from vividflow.jobspec import LABEL_JOB_ID, LABEL_MODEL, LABEL_VIDEOJOB
from vividflow.kube.client import Kube
from vividflow.metrics import exposition
from vividflow.operator import metrics
from vividflow.operator.controller import Controller
from vividflow.settings import Settings


def videojob(name: str, phase: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "vividflow.io/v1",
        "kind": "VideoJob",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1", "uid": f"uid-{name}"},
        "spec": {"model": "wan2.1"},
    }
    if phase is not None:
        body["status"] = {"phase": phase}
    return body


def job(name: str, *, suspend: bool) -> dict[str, Any]:
    labels = {LABEL_MODEL: "wan2.1", LABEL_VIDEOJOB: name, LABEL_JOB_ID: name}
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1", "labels": labels},
        "spec": {"suspend": suspend},
    }


@pytest.fixture
def controller() -> Iterator[Controller]:
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"  # never called: the collector reads only the cache
    found = Controller(Settings(), Kube(configuration))
    yield found
    found.kube.close()


def test_the_collector_reads_phases_held_gpu_jobs_and_the_queue(controller: Controller) -> None:
    for name, phase in (("a", None), ("b", "Processing"), ("c", "Completed"), ("d", "Queued")):
        controller.cache.put_videojob(videojob(name, phase))
    controller.cache.put_job(job("a", suspend=True))
    controller.cache.put_job(job("b", suspend=False))
    controller.queue.add(("videojob", "ns", "a"))
    controller.queue.add(("videojob", "ns", "a"))  # waits once, added twice

    text = exposition(metrics.ControllerCollector(controller)).decode()
    assert value(text, "vividflow_operator_videojobs", phase="Queued") == 2
    assert value(text, "vividflow_operator_videojobs", phase="Processing") == 1
    assert value(text, "vividflow_operator_videojobs", phase="Completed") == 1
    assert value(text, "vividflow_operator_gpu_jobs_held") == 1
    assert value(text, "vividflow_operator_workqueue_depth", name="reconcile") == 1
    assert value(text, "vividflow_operator_workqueue_adds_total", name="reconcile") == 2


def test_kopf_watch_restarts_are_counted_and_kept_quiet(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("kopf._cogs.clients.watching")
    saved = (logger.level, list(logger.filters))
    try:
        metrics.count_watch_restarts(verbose=False)
        labels = {"resource": "jobs.v1.batch"}
        before = metrics.WATCH_RESTARTS.labels(**labels)._value.get()
        with caplog.at_level(logging.DEBUG, logger="kopf"):
            logger.debug("Restarting the watch-stream for jobs.v1.batch in 'ns'.")
            logger.debug("Watch-stream for jobs.v1.batch in 'ns' is inactive, reconnecting.")
            logger.debug("Starting the watch-stream for jobs.v1.batch in 'ns'.")
        assert metrics.WATCH_RESTARTS.labels(**labels)._value.get() - before == 2
        assert not [record for record in caplog.records if record.name == logger.name]  # not verbose
    finally:
        logger.setLevel(saved[0])
        logger.filters[:] = saved[1]


def test_served_metrics_include_the_process_and_the_controller(controller: Controller) -> None:
    port = free_port()
    metrics.count_api_error("PATCH", 409)
    metrics.serve_metrics(controller, port, address="127.0.0.1")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert value(text, "process_resident_memory_bytes") > 0
    assert value(text, "vividflow_operator_kube_api_errors_total", verb="patch", code="409") >= 1
    assert "vividflow_operator_workqueue_depth" in text
