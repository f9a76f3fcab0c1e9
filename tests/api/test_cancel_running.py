"""``POST /cancel/{id}?running=true`` in embedded mode: a processing job stops at its next poll (or
its worker is killed after the grace period), is refunded, writes no result, and the executor goes
on with the next job; the cancel may reach any server sharing the database. Without ``running`` the
spec's behaviour holds: only queued jobs, 409 otherwise."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from tests.api.conftest import MakeSettings, app_state, create_api_key, submit, wait_status
from tests.fixtures.fake_vertex import FakeVertex, Scenario
from tests.fixtures.kube import wait_for
from vividflow.apiserver.app import create_app
from vividflow.apiserver.backends.local import LocalBackend
from vividflow.apiserver.db.models import JobEvent


def polls(fake_vertex: FakeVertex) -> int:
    return len(fake_vertex.polls)


def worker_pids(client: TestClient) -> set[int | None]:
    backend = app_state(client).backend
    assert isinstance(backend, LocalBackend)
    return {slot._process.pid if slot._process else None for slot in backend._slots}


def test_a_running_job_stops_at_its_next_poll_and_is_refunded(
    make_settings: MakeSettings, fake_vertex: FakeVertex
) -> None:
    held = threading.Event()
    fake_vertex.set_scenario(Scenario(until=held))
    settings = make_settings(workers=1, **fake_vertex.settings_overrides())
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": create_api_key(client, "carl@example.com")}
        job_id = submit(client, headers, model="veo3.1")
        wait_for("the job to be polled", lambda: polls(fake_vertex) >= 2)
        assert wait_status(client, headers, job_id, {"processing"})["status"] == "processing"
        worker = worker_pids(client)

        plain = client.post(f"/api/v1/cancel/{job_id}", headers=headers)
        assert plain.status_code == 409, plain.text  # the spec's cancel: queued jobs only
        assert plain.json()["details"] == ["The job is processing; only queued jobs can be cancelled."]

        response = client.post(f"/api/v1/cancel/{job_id}", params={"running": "true"}, headers=headers)
        assert response.status_code == 200
        assert response.json() == {"message": "Job cancelled successfully", "job_id": job_id}
        body = client.get(f"/api/v1/status/{job_id}", headers=headers).json()
        assert body["status"] == "cancelled"
        usage = client.get("/api/v1/usage", headers=headers).json()
        assert usage["credits_remaining"] == usage["daily_limit"] and usage["cancelled_jobs"] == 1

        # The worker stops the job (it answers, so it is not killed) and lives on for the next.
        wait_for("the worker to give the job up", lambda: idle(client))
        held.set()
        fake_vertex.set_scenario(polls=1)
        second = wait_status(client, headers, submit(client, headers, model="veo3.1"))
        assert second["status"] == "completed", second
        assert worker_pids(client) == worker

        again = client.post(f"/api/v1/cancel/{job_id}", params={"running": "true"}, headers=headers)
        assert again.status_code == 409
        assert again.json()["details"] == [
            "The job is cancelled; only queued or processing jobs can be cancelled."
        ]
        assert not (settings.results_dir / f"{job_id}.mp4").exists()
        with app_state(client).session_factory() as session:
            kinds = [e.kind for e in session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.seq)]
        assert kinds[0] == "queued" and kinds[1] == "start" and kinds[-1] == "cancelled"


def idle(client: TestClient) -> bool:
    """Whether every slot of the server's executor is between jobs (its worker gave up its job)."""
    backend = app_state(client).backend
    assert isinstance(backend, LocalBackend)
    return all(slot.job_id is None for slot in backend._slots)


def test_a_worker_stuck_in_a_request_is_killed_after_the_grace(
    make_settings: MakeSettings, fake_vertex: FakeVertex
) -> None:
    stuck = threading.Event()
    fake_vertex.set_scenario(Scenario(hold_polls=stuck))
    settings = make_settings(workers=1, cancel_grace_seconds=1, **fake_vertex.settings_overrides())
    try:
        with TestClient(create_app(settings)) as client:
            headers = {"X-API-Key": create_api_key(client, "kim@example.com")}
            job_id = submit(client, headers, model="veo3.1")
            wait_status(client, headers, job_id, {"processing"})
            wait_for("the worker's poll to hang", lambda: fake_vertex.held_polls >= 1)
            worker = worker_pids(client)
            assert client.post(f"/api/v1/cancel/{job_id}?running=true", headers=headers).status_code == 200
            wait_for("the stuck worker to be replaced", lambda: worker_pids(client) not in (worker, {None}))
            stuck.set()
            fake_vertex.set_scenario(polls=1)
            second = wait_status(client, headers, submit(client, headers, model="veo3.1"))
            assert second["status"] == "completed", second
            assert client.get(f"/api/v1/status/{job_id}", headers=headers).json()["status"] == "cancelled"
    finally:
        stuck.set()


def test_a_cancel_made_on_another_server_stops_the_job(
    make_settings: MakeSettings, fake_vertex: FakeVertex
) -> None:
    """Server B runs the job; the cancel reaches server A (no workers), which shares the database."""
    held = threading.Event()
    fake_vertex.set_scenario(Scenario(until=held))
    runner_settings = make_settings(workers=1, **fake_vertex.settings_overrides())
    try:
        with (
            TestClient(create_app(runner_settings)) as server_b,
            TestClient(create_app(make_settings(workers=0))) as server_a,
        ):
            headers = {"X-API-Key": create_api_key(server_a, "ann@example.com")}
            job_id = submit(server_a, headers, model="veo3.1")
            wait_for("B to poll the job", lambda: polls(fake_vertex) >= 2)
            cancelled = server_a.post(f"/api/v1/cancel/{job_id}?running=true", headers=headers)
            assert cancelled.status_code == 200
            wait_for("B's worker to give the job up", lambda: idle(server_b))
            assert server_b.get(f"/api/v1/status/{job_id}", headers=headers).json()["status"] == "cancelled"
    finally:
        held.set()
