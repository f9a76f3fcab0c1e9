"""Metrics end to end in cluster mode: a real Prometheus scrapes ``vividflow serve`` (two worker
processes, multiprocess mode) and ``vividflow operator`` while veo3.1 jobs complete and fail for real
(VideoJob -> Job -> runner Pod -> status back), and PromQL then gives the counts that happened.

Both servers are fresh processes here, so their counters start at zero: the figures are exact."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import image_bytes
from tests.fixtures.fake_vertex import FakeVertex
from tests.fixtures.prometheus import running_prometheus
from tests.kube.test_e2e import Cluster, cluster  # noqa: F401 (the fixture)
from tests.serve import create_key, running_server, settings_env
from tests.served_app import follow

pytestmark = pytest.mark.slow


def submit(client: httpx.Client, headers: dict[str, str]) -> str:
    files = {"image": ("in.png", image_bytes("PNG", (48, 32)), "image/png")}
    response = client.post(
        "/api/v1/generate", headers=headers, data={"prompt": "p", "model": "veo3.1"}, files=files
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def wait_final(
    client: httpx.Client, headers: dict[str, str], job_id: str, timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/api/v1/status/{job_id}", headers=headers).json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, f"job {job_id} still {body} after {timeout} s"
        time.sleep(0.1)


def test_prometheus_counts_what_happened(cluster: Cluster, fake_vertex: FakeVertex, tmp_path: Path) -> None:  # noqa: F811
    settings = cluster.settings
    env = settings_env(
        backend="kubernetes",
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        kube_namespace=settings.kube_namespace,
        gcs_bucket=settings.gcs_bucket,
        public_url="http://testserver",
        workers=0,
        rate_limits=["100000/hour"],
        api_processes=2,
        log_format="json",
    )
    with running_server(env, tmp_path / "api") as server:
        assert settings.database_url is not None
        headers = {"X-API-Key": create_key(settings.database_url, "pam@example.com")}
        targets = {
            "api": [f"127.0.0.1:{server.port}"],
            "operator": [f"127.0.0.1:{cluster.operator.metrics_port}"],
        }
        with (
            running_prometheus(targets, tmp_path / "prometheus") as prometheus,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            fake_vertex.set_scenario(polls=1)
            completed = [submit(client, headers) for _ in range(2)]
            # One followed through its status stream (an open stream is counted while it lasts).
            events = follow(server.url, headers, completed[0])
            assert events[-1].data["status"] == "completed"
            assert all(wait_final(client, headers, job_id)["status"] == "completed" for job_id in completed)
            fake_vertex.set_scenario(outcome="rai")
            failed = wait_final(client, headers, submit(client, headers))
            assert failed["status"] == "failed", failed
            reason = failed["failure_reason"]

            prometheus.wait_for_targets_up(["api", "operator"])
            expected = {
                # The API (summed over its two processes).
                'sum(vividflow_jobs_submitted_total{model="veo3.1"})': 3,
                'sum(vividflow_jobs_finished_total{status="completed"})': 2,
                f'sum(vividflow_jobs_finished_total{{status="failed",reason="{reason}"}})': 1,
                'sum(vividflow_http_requests_total{route="/api/v1/generate",status_class="2xx"})': 3,
                'sum(vividflow_job_total_seconds_count{model="veo3.1"})': 2,
                'sum(vividflow_job_queue_wait_seconds_count{model="veo3.1"})': 3,
                "sum(vividflow_jobs_queued) + sum(vividflow_jobs_processing)": 0,
                "sum(vividflow_sse_streams_open)": 0,
                # The operator.
                'sum(vividflow_operator_jobs_created_total{model="veo3.1"})': 3,
                'sum(vividflow_operator_videojobs_finished_total{phase="Completed"})': 2,
                f'sum(vividflow_operator_videojobs_finished_total{{phase="Failed",reason="{reason}"}})': 1,
                'sum(vividflow_operator_job_generation_seconds_count{model="veo3.1"})': 2,
                'sum(vividflow_operator_videojobs{phase="Completed"})': 2,
                "sum(vividflow_operator_gpu_jobs_held)": 0,
            }
            for expression, value in expected.items():
                prometheus.wait_for_value(expression, value)
            assert (prometheus.scalar('sum(vividflow_operator_reconciles_total{result="success"})') or 0) > 0
            assert (prometheus.scalar("sum(vividflow_operator_workqueue_adds_total)") or 0) > 0
            assert (prometheus.scalar('process_resident_memory_bytes{job="operator"}') or 0) > 0
            p50 = prometheus.scalar(
                "histogram_quantile(0.5, sum by (le) (vividflow_http_request_duration_seconds_bucket))"
            )
            assert p50 is not None and p50 > 0
