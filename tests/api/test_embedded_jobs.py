"""Jobs running for real in embedded mode: the local executor's worker processes run the runner
against the fake Vertex AI (veo3.1) and the tiny Wan model (wan2.1)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.api.conftest import MakeSettings, app_state, create_api_key, image_bytes, submit, wait_status
from tests.fixtures.fake_vertex import FakeVertex
from vividflow.apiserver.app import create_app
from vividflow.apiserver.db.models import Job
from vividflow.apiserver.services import jobs, leases
from vividflow.runner.video import probe_mp4


@pytest.fixture
def veo_client(make_settings: MakeSettings, fake_vertex: FakeVertex) -> Iterator[TestClient]:
    fake_vertex.set_scenario(polls=2)
    settings = make_settings(workers=1, **fake_vertex.settings_overrides())
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def veo_headers(veo_client: TestClient) -> dict[str, str]:
    return {"X-API-Key": create_api_key(veo_client, "vera@example.com")}


def test_veo_job_completes_with_a_served_mp4(
    veo_client: TestClient, veo_headers: dict[str, str], fake_vertex: FakeVertex, tmp_path: Path
) -> None:
    job_id = submit(veo_client, veo_headers, model="veo3.1", duration_seconds=6, camera_motion="Dolly in")
    body = wait_status(veo_client, veo_headers, job_id)
    assert body["status"] == "completed", body
    assert body["result_url"] == f"http://testserver/files/results/{job_id}.mp4"
    metrics = body["metrics"]
    assert metrics["total_time"] >= metrics["generation_time"] > 0 and metrics["spin_up_time"] >= 0

    video = veo_client.get(body["result_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    (tmp_path / "out.mp4").write_bytes(video.content)
    assert probe_mp4(tmp_path / "out.mp4").frames > 0

    sent = fake_vertex.submits[0].body
    assert sent["parameters"]["durationSeconds"] == 6
    assert "Dolly in" in sent["instances"][0]["prompt"]
    history = veo_client.get("/api/v1/history", headers=veo_headers).json()["jobs"]
    assert history[0]["result_url"] == body["result_url"]
    assert veo_client.get("/api/v1/usage", headers=veo_headers).json()["completed_jobs"] == 1


def test_prefer_wait_returns_the_final_status(veo_client: TestClient, veo_headers: dict[str, str]) -> None:
    response = veo_client.post(
        "/api/v1/generate",
        headers={**veo_headers, "Prefer": "wait=60"},
        data={"prompt": "p", "model": "veo3.1"},
        files={"image": ("in.png", image_bytes(), "image/png")},
    )
    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=60"
    body = response.json()
    assert body["status"] == "completed" and body["result_url"].endswith(".mp4") and "metrics" in body


def test_prefer_wait_times_out_to_202(
    veo_client: TestClient, veo_headers: dict[str, str], fake_vertex: FakeVertex
) -> None:
    fake_vertex.set_scenario(outcome="never")
    started = time.monotonic()
    response = veo_client.post(
        "/api/v1/generate",
        headers={**veo_headers, "Prefer": "respond-async, wait=1"},
        data={"prompt": "p", "model": "veo3.1"},
        files={"image": ("in.png", image_bytes(), "image/png")},
    )
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert time.monotonic() - started >= 1.0


def test_failures_are_reported_and_the_queue_goes_on(
    veo_client: TestClient, veo_headers: dict[str, str], fake_vertex: FakeVertex
) -> None:
    fake_vertex.set_scenario(outcome="rai")
    body = wait_status(veo_client, veo_headers, submit(veo_client, veo_headers, model="veo3.1"))
    assert body["status"] == "failed"
    assert "safety" in body["error_message"].lower() and "Traceback" not in body["error_message"]

    fake_vertex.set_scenario(polls=1)
    assert wait_status(veo_client, veo_headers, submit(veo_client, veo_headers, model="veo3.1"))[
        "status"
    ] == ("completed")


def test_jobs_run_in_submission_order(veo_client: TestClient, veo_headers: dict[str, str]) -> None:
    ids = [submit(veo_client, veo_headers, model="veo3.1") for _ in range(3)]
    for job_id in ids:
        assert wait_status(veo_client, veo_headers, job_id)["status"] == "completed"
    with app_state(veo_client).session_factory() as session:
        started = [jobs.get_job(session, job_id).started_at for job_id in ids]  # type: ignore[union-attr]
    assert started == sorted(started)  # type: ignore[type-var]


def _worker_processes() -> list[multiprocessing.process.BaseProcess]:
    return [child for child in multiprocessing.active_children() if child.name.endswith("-worker")]


def test_a_killed_worker_fails_its_job_and_the_server_lives_on(
    veo_client: TestClient, veo_headers: dict[str, str], fake_vertex: FakeVertex
) -> None:
    fake_vertex.set_scenario(outcome="never")
    job_id = submit(veo_client, veo_headers, model="veo3.1")
    assert wait_status(veo_client, veo_headers, job_id, until={"processing"})["status"] == "processing"
    (worker,) = _worker_processes()
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)

    body = wait_status(veo_client, veo_headers, job_id)
    assert body["status"] == "failed" and body["failure_reason"] == "out_of_memory"
    assert "killed (SIGKILL)" in body["error_message"]

    fake_vertex.set_scenario(polls=1)
    assert wait_status(veo_client, veo_headers, submit(veo_client, veo_headers, model="veo3.1"))[
        "status"
    ] == ("completed")


def test_deadline_stops_a_job(make_settings: MakeSettings, fake_vertex: FakeVertex) -> None:
    fake_vertex.set_scenario(outcome="never")
    settings = make_settings(workers=1, job_deadline_seconds=2, **fake_vertex.settings_overrides())
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": create_api_key(client, "tim@example.com")}
        body = wait_status(client, headers, submit(client, headers, model="veo3.1"), timeout=30)
    assert body["status"] == "failed" and body["failure_reason"] == "timeout"


def test_restart_loses_no_job(make_settings: MakeSettings, fake_vertex: FakeVertex) -> None:
    """A job whose executor died is run again (it has attempts left); one out of attempts fails
    ``interrupted`` with its credit refunded."""
    fake_vertex.set_scenario(polls=1)
    with TestClient(create_app(make_settings(workers=0))) as client:
        headers = {"X-API-Key": create_api_key(client, "rita@example.com")}
        interrupted, exhausted, waiting = (submit(client, headers, model="veo3.1") for _ in range(3))
        with app_state(client).session_factory.begin() as session:
            # As if an executor had started them and then died: leases that have run out.
            for expected in (interrupted, exhausted):
                claimed = leases.claim_next_queued(session, "dead-executor", lease_seconds=0)
                assert claimed is not None and claimed.id == expected
            session.execute(update(Job).where(Job.id == exhausted).values(attempts=3))
        assert client.get("/api/v1/usage", headers=headers).json()["credits_remaining"] == 497

    with TestClient(create_app(make_settings(workers=1, **fake_vertex.settings_overrides()))) as client:
        assert wait_status(client, headers, interrupted)["status"] == "completed"
        failed = wait_status(client, headers, exhausted)
        assert failed["status"] == "failed" and failed["failure_reason"] == "interrupted"
        assert "no attempts left" in failed["error_message"]
        assert wait_status(client, headers, waiting)["status"] == "completed"
        with app_state(client).session_factory() as session:
            assert jobs.get_job(session, interrupted).attempts == 2  # type: ignore[union-attr]
        assert client.get("/api/v1/usage", headers=headers).json()["credits_remaining"] == 498


@pytest.mark.slow
def test_wan_job_through_the_api(
    make_settings: MakeSettings, tiny_wan_model_dir: Path, tmp_path: Path
) -> None:
    # Polling two slow CPU jobs on a loaded machine would exceed the default 500 requests/hour.
    settings = make_settings(workers=1, wan_model=str(tiny_wan_model_dir), rate_limits=["100000/hour"])
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": create_api_key(client, "wanda@example.com")}
        params = {"width": 32, "height": 32, "length": 9, "steps": 2, "seed": 7}
        first = wait_status(client, headers, submit(client, headers, **params))
        second = wait_status(client, headers, submit(client, headers, **params))
        assert first["status"] == second["status"] == "completed", (first, second)
        videos = []
        for n, body in enumerate((first, second)):
            path = tmp_path / f"{n}.mp4"
            path.write_bytes(client.get(body["result_url"]).content)
            info = probe_mp4(path)
            assert (info.frames, info.width, info.height) == (9, 32, 32)
            videos.append(path.read_bytes())
        assert videos[0] == videos[1]  # same seed, same video
        # The second job found the pipeline already loaded in its warm worker.
        assert second["metrics"]["spin_up_time"] < first["metrics"]["spin_up_time"] / 2
