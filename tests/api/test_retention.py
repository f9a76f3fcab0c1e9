"""Result retention: old jobs' inputs and results are deleted (local files, GCS objects), their result
URL answers 410 and /status says result_expired; young, active and kept jobs keep everything; rounds
are idempotent, overlap safely and retry after a storage error; `vividflow gc`; the server's own rounds.

Jobs are aged by writing their timestamps in the database (test setup). The in-process apps run
with retention 0, so the server's own rounds stay out of the way and each test runs its rounds itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.api.conftest import MakeSettings, app_state, create_api_key, image_bytes, submit
from tests.fixtures.gcs_emulator import GcsEmulator
from tests.serve import create_key, running_server, settings_env
from vividflow.apiserver.app import create_app
from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import Job, JobEvent
from vividflow.apiserver.db.session import make_engine, make_session_factory
from vividflow.apiserver.services import jobs, retention
from vividflow.jobspec import FailureReason, JobMetrics, JobStatus, RunResult
from vividflow.settings import Settings
from vividflow.storage import gcs, locations

DAYS = 30.0
OLD = timedelta(days=40)
YOUNG = timedelta(days=1)
EXECUTOR = "retention-test"
VIDEO = b"\0" * 2048
GONE = {"error": "Gone", "details": ["This video was deleted when its retention period ended."]}

Factory = sessionmaker[Session]


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(result_retention_days=0)


def factory_of(client: TestClient) -> Factory:
    return app_state(client).session_factory


def start(factory: Factory, job_id: str) -> None:
    with factory.begin() as session:
        now = utcnow()
        assert jobs.transition(
            session,
            job_id,
            JobStatus.PROCESSING,
            [JobStatus.QUEUED],
            started_at=now,
            lease_owner=EXECUTOR,
            lease_expires_at=now + timedelta(minutes=5),
        )


def finish(factory: Factory, settings: Settings, job_id: str, status: JobStatus) -> None:
    """End a queued job as ``status``; a completed one gets its video written where the runner would."""
    if status is JobStatus.CANCELLED:
        with factory.begin() as session:
            assert jobs.finish(session, job_id, status, from_=[JobStatus.QUEUED])
        return
    start(factory, job_id)
    with factory() as session:
        output_uri = session.scalars(select(Job.output_uri).where(Job.id == job_id)).one()
    if status is JobStatus.COMPLETED:
        with tempfile.TemporaryDirectory() as scratch:
            video = Path(scratch) / "out.mp4"
            video.write_bytes(VIDEO)
            locations.write_output(video, output_uri, settings)
        url = locations.result_url_for(output_uri, settings)
        metrics = JobMetrics(spin_up_time=1.0, generation_time=2.0, total_time=3.0)
        result = RunResult.success(result_url=url, output_uri=output_uri, metrics=metrics)
    else:
        result = RunResult.failure(FailureReason.INVALID_INPUT, "bad image")
    with factory.begin() as session:
        assert jobs.record_result(session, job_id, result, EXECUTOR)


def age(factory: Factory, job_id: str, by: timedelta) -> None:
    """Move the job's creation (and end, if it ended) ``by`` into the past."""
    with factory.begin() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        job.created_at = utcnow() - by
        if job.completed_at is not None:
            job.completed_at = job.created_at


def finished_job(
    client: TestClient,
    headers: dict[str, str],
    status: JobStatus = JobStatus.COMPLETED,
    ended_ago: timedelta = OLD,
) -> str:
    job_id = submit(client, headers)
    finish(factory_of(client), app_state(client).settings, job_id, status)
    age(factory_of(client), job_id, ended_ago)
    return job_id


def job_row(factory: Factory, job_id: str) -> Job:
    with factory() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        return job


def local_files(factory: Factory, job_id: str) -> tuple[Path, Path]:
    job = job_row(factory, job_id)
    return Path(job.input_uri), Path(job.output_uri)


def result_path(factory: Factory, job_id: str) -> str:
    url = job_row(factory, job_id).result_url
    assert url is not None
    return urlsplit(url).path


def expire(client: TestClient, days: float | None = DAYS, batch_size: int = 200) -> retention.Outcome:
    state = app_state(client)
    return retention.expire(state.session_factory, state.settings, days=days, batch_size=batch_size)


def event_count(factory: Factory, job_id: str) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).where(JobEvent.job_id == job_id)) or 0)


def test_old_jobs_lose_their_files_and_say_so(client: TestClient, headers: dict[str, str]) -> None:
    factory = factory_of(client)
    done = finished_job(client, headers)
    failed = finished_job(client, headers, JobStatus.FAILED)
    cancelled = finished_job(client, headers, JobStatus.CANCELLED)
    files = {job_id: local_files(factory, job_id) for job_id in (done, failed, cancelled)}
    assert all(path.is_file() for path in files[done])
    url = result_path(factory, done)
    assert client.get(url).content == VIDEO
    events = event_count(factory, done)

    outcome = expire(client)

    assert (outcome.expired, outcome.failed) == (3, [])
    assert not any(path.exists() for pair in files.values() for path in pair)
    gone = client.get(url)
    assert gone.status_code == 410 and gone.json() == GONE
    assert client.head(url).status_code == 410
    documented = client.get("/openapi.json").json()["paths"]["/files/results/{name}"]
    assert "410" in documented["get"]["responses"] and "410" in documented["head"]["responses"]
    unknown = client.get("/files/results/0f7c1e2a-0000-4222-8333-444455556666.mp4")
    assert unknown.status_code == 404 and unknown.json()["error"] == "Not found"
    body = client.get(f"/api/v1/status/{done}", headers=headers).json()
    assert body["status"] == "completed" and body["result_expired"] is True
    assert body["result_url"].endswith(f"/files/results/{done}.mp4") and "metrics" in body
    assert "result_expired" not in client.get(f"/api/v1/status/{failed}", headers=headers).json()
    # The job stays, with its last event (what its stream still sends); a second round finds nothing.
    assert events > 1 and event_count(factory, done) == 1
    with factory() as session:
        (last,) = session.scalars(select(JobEvent).where(JobEvent.job_id == done))
        assert last.seq == job_row(factory, done).event_seq and last.kind == "completed"
    assert all(job_row(factory, job_id).result_expired_at is not None for job_id in files)
    assert expire(client).expired == 0


def test_young_active_and_kept_jobs_keep_everything(client: TestClient, headers: dict[str, str]) -> None:
    factory = factory_of(client)
    young = finished_job(client, headers, ended_ago=YOUNG)
    kept = finished_job(client, headers)
    queued = submit(client, headers)
    age(factory, queued, OLD)
    processing = submit(client, headers)
    start(factory, processing)
    age(factory, processing, OLD)
    watched = (young, kept, queued, processing)
    inputs = [local_files(factory, job_id)[0] for job_id in watched]

    assert expire(client, days=None).expired == 0  # the setting: 0 keeps everything
    assert expire(client, days=0).expired == 0
    assert all(path.is_file() for path in inputs)
    assert expire(client, days=DAYS).expired == 1  # only `kept`, the old terminal job
    assert not local_files(factory, kept)[0].exists()
    assert all(local_files(factory, job_id)[0].is_file() for job_id in (young, queued, processing))
    assert client.get(result_path(factory, young)).content == VIDEO
    young_status = client.get(f"/api/v1/status/{young}", headers=headers).json()
    assert young_status["status"] == "completed" and "result_expired" not in young_status
    for job_id in (queued, processing):
        assert job_row(factory, job_id).result_expired_at is None


def test_files_already_gone_are_fine(client: TestClient, headers: dict[str, str]) -> None:
    factory = factory_of(client)
    job_id = finished_job(client, headers)
    for path in local_files(factory, job_id):
        path.unlink()
    assert expire(client).expired == 1
    assert client.get(result_path(factory, job_id)).status_code == 410


def test_a_storage_error_leaves_the_job_for_the_next_round(
    client: TestClient, headers: dict[str, str]
) -> None:
    factory = factory_of(client)
    job_id = finished_job(client, headers)
    image, video = local_files(factory, job_id)
    image.unlink()
    image.mkdir()  # a directory in the file's place: unlink fails, as on a read-only or broken disk
    (image / "keep").write_bytes(b"x")

    outcome = expire(client)

    assert (outcome.expired, outcome.failed) == (0, [job_id])
    assert video.is_file() and client.get(result_path(factory, job_id)).content == VIDEO
    assert "result_expired" not in client.get(f"/api/v1/status/{job_id}", headers=headers).json()
    shutil.rmtree(image)
    assert expire(client).expired == 1
    assert not video.exists() and job_row(factory, job_id).result_expired_at is not None


def test_overlapping_rounds_in_small_batches_share_the_work(
    client: TestClient, headers: dict[str, str]
) -> None:
    factory = factory_of(client)
    ids = [finished_job(client, headers) for _ in range(5)]
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda _: expire(client, batch_size=2), range(2)))
    assert sum(outcome.expired for outcome in outcomes) == 5
    assert not any(outcome.failed for outcome in outcomes)
    for job_id in ids:
        assert job_row(factory, job_id).result_expired_at is not None
        assert not any(path.exists() for path in local_files(factory, job_id))


# -- GCS ----------------------------------------------------------------------------------------------


@pytest.fixture
def gcs_client(make_settings: MakeSettings, gcs_emulator: GcsEmulator) -> Iterator[TestClient]:
    bucket = gcs_emulator.make_bucket("vivid-retention")
    with TestClient(create_app(make_settings(gcs_bucket=bucket, result_retention_days=0))) as client:
        yield client


def test_gcs_objects_are_deleted_but_never_a_users_own_image(
    gcs_client: TestClient, gcs_emulator: GcsEmulator
) -> None:
    headers = {"X-API-Key": create_api_key(gcs_client, "gcs@example.com")}
    factory, settings = factory_of(gcs_client), app_state(gcs_client).settings
    ours = finished_job(gcs_client, headers)
    gcs_emulator.put("user-photos", "cat.png", image_bytes(), content_type="image/png")
    response = gcs_client.post(
        "/api/v1/generate",
        data={"prompt": "a cat", "image_url": "gs://user-photos/cat.png"},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    theirs = response.json()["job_id"]
    finish(factory, settings, theirs, JobStatus.COMPLETED)
    age(factory, theirs, OLD)
    job = job_row(factory, ours)
    stored = [
        gcs.parse_gcs_url(uri) for uri in (job.input_uri, job.output_uri, job_row(factory, theirs).output_uri)
    ]
    assert [location.name.split("/")[0] for location in stored if location] == ["inputs", "videos", "videos"]
    assert all(location is not None and gcs.object_size(location) for location in stored)

    outcome = expire(gcs_client)

    assert (outcome.expired, outcome.failed) == (2, [])
    assert all(location is not None and gcs.object_size(location) is None for location in stored)
    assert gcs.object_size(gcs.GcsLocation("user-photos", "cat.png"))
    body = gcs_client.get(f"/api/v1/status/{ours}", headers=headers).json()
    assert body["status"] == "completed" and body["result_expired"] is True
    assert expire(gcs_client).expired == 0


# -- `vividflow gc` -----------------------------------------------------------------------------------


def gc(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("VIVID_")}
    env |= settings_env(
        database_url=settings.resolved_database_url, data_dir=settings.data_dir, result_retention_days=DAYS
    )
    return subprocess.run(
        [sys.executable, "-m", "vividflow.cli", "gc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_gc_command(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    factory = factory_of(client)
    old = finished_job(client, headers)
    young = finished_job(client, headers, ended_ago=YOUNG)
    stuck = finished_job(client, headers)
    old_files, young_files = local_files(factory, old), local_files(factory, young)
    stuck_input = local_files(factory, stuck)[0]
    stuck_input.unlink()
    stuck_input.mkdir()  # cannot be unlinked
    (stuck_input / "keep").write_bytes(b"x")

    dry = gc(settings, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    listed, listed_stuck, summary = dry.stdout.splitlines()
    assert listed.startswith(f"{old}  ended ") and all(str(path) in listed for path in old_files)
    assert listed_stuck.startswith(f"{stuck}  ended ")
    assert summary == "would delete the inputs and results of 2 jobs"
    assert all(path.is_file() for path in old_files) and job_row(factory, old).result_expired_at is None
    assert (
        gc(settings, "--dry-run", "--days", "50").stdout == "would delete the inputs and results of 0 jobs\n"
    )

    done = gc(settings)
    assert done.returncode == 1, done.stderr
    assert done.stdout == "deleted the inputs and results of 1 jobs\n"
    reason, failed = done.stderr.splitlines()  # the warning of the round, then the summary
    assert reason == f"retention: job {stuck}: could not delete {stuck_input}: Is a directory"
    assert failed == f"could not delete the files of 1 jobs (kept for the next run): {stuck}"
    assert not any(path.exists() for path in old_files) and all(path.is_file() for path in young_files)
    assert client.get(f"/api/v1/status/{old}", headers=headers).json()["result_expired"] is True
    assert job_row(factory, stuck).result_expired_at is None
    assert gc(settings, "--days", "-1").returncode == 2


# -- the server's own rounds ----------------------------------------------------------------------------


def test_the_server_expires_old_results_on_its_own(database_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, public_url="http://served")
    env = settings_env(
        database_url=database_url,
        data_dir=settings.data_dir,
        workers=0,
        result_retention_days=DAYS,
        retention_interval_seconds=0.2,
    )
    with running_server(env, tmp_path) as server:
        headers = {"X-API-Key": create_key(database_url, "served@example.com")}
        upload = {"image": ("in.png", image_bytes(), "image/png")}
        response = httpx.post(
            f"{server.url}/api/v1/generate", data={"prompt": "waves"}, files=upload, headers=headers
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        engine = make_engine(database_url)
        try:
            factory = make_session_factory(engine)
            finish(factory, settings, job_id, JobStatus.COMPLETED)
            image, video = local_files(factory, job_id)
            url = f"{server.url}{result_path(factory, job_id)}"
            assert httpx.get(url).content == VIDEO
            age(factory, job_id, OLD)
            deadline = time.monotonic() + 30
            while True:  # the server's rounds run every 0.2 s
                body = httpx.get(f"{server.url}/api/v1/status/{job_id}", headers=headers).json()
                if "result_expired" in body:
                    break
                assert time.monotonic() < deadline, f"not expired after 30 s: {body}"
                time.sleep(0.05)
        finally:
            engine.dispose()
        assert body["status"] == "completed" and body["result_expired"] is True
        assert not image.exists() and not video.exists()
        gone = httpx.get(url)
        assert gone.status_code == 410 and gone.json() == GONE
    assert "Traceback" not in server.log()
