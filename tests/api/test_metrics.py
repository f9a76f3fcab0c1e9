"""``GET /metrics`` of the API process: HTTP traffic by route template, jobs submitted and finished,
queue depth from the database, refusals, refunds and the embedded executor, in Prometheus' format.

Counters are per process and tests share one: every check compares a figure before and after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import MakeSettings, create_api_key, submit, wait_status
from tests.fixtures.fake_vertex import FakeVertex
from tests.metrics_text import label_values, value
from tests.serve import create_key, running_server, settings_env
from vividflow.apiserver.app import create_app
from vividflow.metrics import EXPOSITION_CONTENT_TYPE


def scrape(client: TestClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == EXPOSITION_CONTENT_TYPE
    return response.text


def test_requests_are_counted_by_route_template_without_a_key(
    client: TestClient, headers: dict[str, str]
) -> None:
    route = "/api/v1/status/{job_id}"
    before = scrape(client)
    for job_id in ("job-one", "job-two"):
        assert client.get(f"/api/v1/status/{job_id}", headers=headers).status_code == 404
    assert client.get("/api/v1/usage", headers=headers).status_code == 200
    assert client.get("/no/such/page").status_code == 404
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("vividflow_http_requests_total", route=route, method="GET", status_class="4xx") == 2
    assert delta("vividflow_http_requests_total", route="/api/v1/usage", status_class="2xx") == 1
    assert delta("vividflow_http_requests_total", route="unmatched", status_class="4xx") == 1
    assert delta("vividflow_http_request_duration_seconds_count", route=route, method="GET") == 2
    routes = label_values(after, "route")
    assert not any("job-one" in each or "job-two" in each for each in routes), routes
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_queue_depth_is_read_from_the_database(client: TestClient, headers: dict[str, str]) -> None:
    """No executor runs here (workers=0): the jobs stay queued, and a cancel is counted and refunded."""
    before = scrape(client)
    first = submit(client, headers)
    submit(client, headers)
    during = scrape(client)
    assert value(during, "vividflow_jobs_queued", model="wan2.1") == 2
    assert value(during, "vividflow_jobs_processing", model="wan2.1") == 0
    assert value(during, "vividflow_queue_oldest_age_seconds", model="wan2.1") >= 0
    assert value(during, "vividflow_jobs_queued", model="veo3.1") == 0
    submitted = "vividflow_jobs_submitted_total"
    assert value(during, submitted, model="wan2.1") - value(before, submitted, model="wan2.1") == 2

    assert client.post(f"/api/v1/cancel/{first}", headers=headers).status_code == 200
    after = scrape(client)
    finished = {"model": "wan2.1", "status": "cancelled", "reason": "cancelled"}
    name = "vividflow_jobs_finished_total"
    assert value(after, name, **finished) - value(before, name, **finished) == 1
    refunds = "vividflow_credits_refunded_total"
    assert value(after, refunds) - value(before, refunds) == 1
    assert value(after, "vividflow_jobs_queued", model="wan2.1") == 1


def test_rate_limit_refusals_are_counted_by_limit(make_settings: MakeSettings) -> None:
    with TestClient(create_app(make_settings(rate_limits=["2/day"]))) as client:
        headers = {"X-API-Key": create_api_key(client, "rita@example.com")}
        before = scrape(client)
        answers = [client.get("/api/v1/usage", headers=headers).status_code for _ in range(3)]
        after = scrape(client)
    assert answers == [200, 200, 429]
    name = "vividflow_rate_limit_refusals_total"
    assert value(after, name, limit="user") - value(before, name, limit="user") == 1


def test_metrics_are_not_served_through_a_proxy(client: TestClient, make_settings: MakeSettings) -> None:
    """An Ingress adds X-Forwarded-For: publishing the API must not publish its metrics."""
    for header in ({"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"}):
        response = client.get("/metrics", headers=header)
        assert response.status_code == 404
        assert response.json()["error"] == "Not found" and "proxy" in response.json()["details"][0]
    with TestClient(create_app(make_settings(metrics_via_proxy=True))) as allowed:
        assert allowed.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 200


def test_metrics_can_be_turned_off(make_settings: MakeSettings) -> None:
    with TestClient(create_app(make_settings(metrics_enabled=False))) as client:
        assert client.get("/metrics").status_code == 404


@pytest.fixture
def veo_client(make_settings: MakeSettings, fake_vertex: FakeVertex) -> Iterator[TestClient]:
    fake_vertex.set_scenario(polls=1)
    with TestClient(create_app(make_settings(workers=1, **fake_vertex.settings_overrides()))) as client:
        yield client


def test_a_completed_job_feeds_the_job_and_executor_metrics(veo_client: TestClient) -> None:
    headers = {"X-API-Key": create_api_key(veo_client, "mia@example.com")}
    before = scrape(veo_client)
    job_id = submit(veo_client, headers, model="veo3.1", duration_seconds=4)
    body = wait_status(veo_client, headers, job_id)
    assert body["status"] == "completed", body
    after = scrape(veo_client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    veo = {"model": "veo3.1"}
    assert delta("vividflow_jobs_submitted_total", **veo) == 1
    assert delta("vividflow_jobs_finished_total", **veo, status="completed", reason="") == 1
    assert delta("vividflow_job_queue_wait_seconds_count", **veo) == 1
    assert delta("vividflow_job_total_seconds_count", **veo) == 1
    assert delta("vividflow_job_generation_seconds_sum", **veo) == pytest.approx(
        body["metrics"]["generation_time"]
    )
    # The worker loaded Veo's client for this job: a cold worker, one load.
    assert body["metrics"]["model_load_time"] >= 0
    assert delta("vividflow_executor_model_loads_total", **veo) == 1
    assert delta("vividflow_executor_model_load_seconds_count", **veo) == 1
    assert value(after, "vividflow_executor_workers_alive") >= 1
    assert delta("vividflow_credits_refunded_total") == 0


def test_several_server_processes_are_summed(tmp_path: Path) -> None:
    """``VIVID_API_PROCESSES=2``: uvicorn's worker processes each count their own requests, and any of
    them answers the scrape with the sum (prometheus-client's multiprocess mode)."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # an earlier run's: removed at start
    env = {
        **settings_env(data_dir=tmp_path / "data", workers=0, api_processes=2, rate_limits=["100000/hour"]),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    requests = 40
    with running_server(env, tmp_path) as server:
        assert len(server.children()) >= 2
        key = create_key(f"sqlite:///{(tmp_path / 'data' / 'vividflow.db').resolve()}", "pia@example.com")
        close = {"Connection": "close"}  # new connections: the kernel spreads them over the processes
        headers = {"X-API-Key": key, **close}
        before = httpx.get(f"{server.url}/metrics", headers=close, timeout=10).text
        for _ in range(requests):
            response = httpx.get(f"{server.url}/api/v1/usage", headers=headers, timeout=10)
            assert response.status_code == 200
        after = httpx.get(f"{server.url}/metrics", headers=close, timeout=10).text
        counting = {path.stem.split("_")[-1] for path in metrics_dir.glob("counter_*.db")}
    assert "1" not in counting and len(counting) == 2, counting  # both processes counted requests
    name = "vividflow_http_requests_total"
    labels = {"route": "/api/v1/usage", "status_class": "2xx"}
    assert value(after, name, **labels) - value(before, name, **labels) == requests
