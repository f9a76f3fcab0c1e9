"""Several servers on one database (replicas, a rolling restart), on SQLite and PostgreSQL: each
executor holds a lease on the jobs it runs, so another server leaves them alone while the lease is
renewed, takes them back once it has expired, and a worker never outlives its server."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import MakeSettings, app_state, image_bytes, wait_status
from tests.fixtures.fake_vertex import FakeVertex
from tests.fixtures.kube import wait_for
from tests.serve import ServerProcess, create_key, running_server, settings_env
from vividflow.apiserver.app import create_app
from vividflow.apiserver.backends.local import LocalBackend
from vividflow.apiserver.db.models import Job
from vividflow.apiserver.services import jobs

LEASE_SECONDS = 3.0


def _local(client: TestClient) -> LocalBackend:
    backend = app_state(client).backend
    assert isinstance(backend, LocalBackend)
    return backend


def _job(client: TestClient, job_id: str) -> Job:
    with app_state(client).session_factory() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        return job


def _submit(server: ServerProcess, key: str) -> str:
    response = httpx.post(
        f"{server.url}/api/v1/generate",
        headers={"X-API-Key": key},
        data={"prompt": "a lighthouse", "model": "veo3.1"},
        files={"image": ("in.png", image_bytes(), "image/png")},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waits for its reaper: it is dead
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def gate(fake_vertex: FakeVertex) -> Iterator[threading.Event]:
    """Veo jobs run until the test sets this."""
    release = threading.Event()
    fake_vertex.set_scenario(until=release)
    yield release
    release.set()


def test_servers_sharing_a_database_leave_live_leases_alone_and_recover_dead_ones(
    tmp_path: Path,
    database_url: str,
    make_settings: MakeSettings,
    fake_vertex: FakeVertex,
    gate: threading.Event,
) -> None:
    common = {"lease_seconds": LEASE_SECONDS, "migrate_on_start": False, **fake_vertex.settings_overrides()}
    # One data directory for every server, as replicas on one machine share it.
    env = settings_env(database_url=database_url, data_dir=tmp_path / "data", workers=1, **common)
    key = create_key(database_url, "lena@example.com")
    headers = {"X-API-Key": key}

    with running_server(env, tmp_path, name="server-a") as server_a:
        running = _submit(server_a, key)
        # Server B starts beside A, with no workers (as `VIVID_WORKERS=0` or a second replica).
        with TestClient(create_app(make_settings(workers=0, **common))) as server_b:
            wait_status(server_b, headers, running, until={"processing"})
            first = _job(server_b, running)
            assert first.lease_owner is not None and first.attempts == 1
            rounds = _local(server_b).lease_rounds
            # Several of B's lease rounds, and A renewing its lease through them: the job is A's.
            wait_for("B's lease rounds", lambda: _local(server_b).lease_rounds >= rounds + 3, timeout=60)
            renewed = wait_for(
                "A to renew its lease",
                lambda: (job := _job(server_b, running)).lease_expires_at > first.lease_expires_at and job,
                timeout=60,
            )
            assert renewed.status == "processing" and renewed.lease_owner == first.lease_owner
            gate.set()
            done = wait_status(server_b, headers, running)
            assert done["status"] == "completed", done

            # A dies (kill -9) with a job running: its worker goes with it, and B takes the job back
            # once the lease has run out: queued again, as it has attempts left.
            gate.clear()
            orphaned = _submit(server_a, key)
            wait_status(server_b, headers, orphaned, until={"processing"})
            workers = wait_for("A's worker process", server_a.children)
            server_a.kill()
            for pid in workers:
                wait_for(f"worker {pid} to die with its server", lambda pid=pid: not _alive(pid), timeout=15)
            recovered = wait_status(server_b, headers, orphaned, until={"queued"}, timeout=60)
            assert recovered["status"] == "queued"
            assert _job(server_b, orphaned).attempts == 1

    # A server with a worker runs it to the end; the credit was spent once for it.
    gate.set()
    with TestClient(create_app(make_settings(workers=1, **common))) as server_c:
        assert wait_status(server_c, headers, orphaned)["status"] == "completed"
        assert _job(server_c, orphaned).attempts == 2
        usage = server_c.get("/api/v1/usage", headers=headers).json()
        assert usage["completed_jobs"] == 2 and usage["credits_remaining"] == usage["daily_limit"] - 2


def test_a_stopping_server_hands_its_running_job_back(
    make_settings: MakeSettings, fake_vertex: FakeVertex, gate: threading.Event
) -> None:
    settings = make_settings(workers=1, lease_seconds=LEASE_SECONDS, **fake_vertex.settings_overrides())
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": create_key(str(settings.database_url), "sam@example.com")}
        response = client.post(
            "/api/v1/generate",
            headers=headers,
            data={"prompt": "p", "model": "veo3.1"},
            files={"image": ("in.png", image_bytes(), "image/png")},
        )
        job_id = response.json()["job_id"]
        wait_status(client, headers, job_id, until={"processing"})
    # Stopped cleanly mid-job: queued again at once, no lease to wait out.
    with TestClient(create_app(make_settings(workers=0))) as client:
        body = client.get(f"/api/v1/status/{job_id}", headers=headers).json()
        assert body["status"] == "queued" and body["queue_position"] == 0
        job = _job(client, job_id)
        assert job.lease_owner is None and job.attempts == 1
