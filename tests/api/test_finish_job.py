"""A run's end through ``jobs.finish_job``, from the embedded executor's result and from a mirrored
VideoJob status alike: run time, metrics, refunds, and a cancel that came first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import app_state, submit
from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import Job
from vividflow.apiserver.services import jobs
from vividflow.jobspec import FailureReason, JobMetrics, JobStatus, RunResult, VideoJobStatus

EXECUTOR = "test-executor"
METRICS = JobMetrics(spin_up_time=1.0, generation_time=2.0, total_time=4.0)


def _credits_remaining(client: TestClient, headers: dict[str, str]) -> int:
    remaining: int = client.get("/api/v1/usage", headers=headers).json()["credits_remaining"]
    return remaining


def _row(client: TestClient, job_id: str) -> Job:
    with app_state(client).session_factory() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        session.expunge(job)
        return job


def test_a_videojob_end_keeps_its_times_and_metrics(client: TestClient, headers: dict[str, str]) -> None:
    job_id = submit(client, headers)
    start = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
    status = VideoJobStatus(
        phase="Completed",
        start_time=start,
        completion_time=start + timedelta(seconds=90),
        metrics=METRICS,
    )
    with app_state(client).session_factory.begin() as session:
        assert jobs.apply_videojob_status(session, job_id, status, result_url="https://example/v.mp4")
        assert not jobs.apply_videojob_status(session, job_id, status, result_url="https://example/v.mp4")
    job = _row(client, job_id)
    assert job.status == "completed" and job.progress == 100 and job.result_url == "https://example/v.mp4"
    assert job.started_at == start.replace(tzinfo=None) and job.run_seconds == 90.0
    assert job.completed_at == (start + timedelta(seconds=90)).replace(tzinfo=None)
    assert job.metrics == METRICS.model_dump(mode="json")


@pytest.mark.parametrize(
    ("reason", "refunded"), [(FailureReason.INTERNAL, True), (FailureReason.INVALID_INPUT, False)]
)
def test_both_modes_end_a_failed_job_the_same_way(
    client: TestClient, headers: dict[str, str], reason: FailureReason, refunded: bool
) -> None:
    embedded, cluster = submit(client, headers), submit(client, headers)
    factory = app_state(client).session_factory
    with factory.begin() as session:
        assert jobs.claim(session, embedded, EXECUTOR, 300)
        assert jobs.transition(
            session, cluster, JobStatus.PROCESSING, [JobStatus.QUEUED], started_at=utcnow()
        )
    with factory.begin() as session:
        assert jobs.record_result(
            session, embedded, RunResult.failure(reason, "it failed", METRICS), EXECUTOR
        )
        failed = VideoJobStatus(phase="Failed", reason=reason, error_message="it failed", metrics=METRICS)
        assert jobs.apply_videojob_status(session, cluster, failed)
    for job in (_row(client, embedded), _row(client, cluster)):
        assert job.status == "failed" and job.failure_reason == reason.value
        assert job.error_message == "it failed" and job.metrics == METRICS.model_dump(mode="json")
        assert job.run_seconds is not None and job.run_seconds >= 0 and job.lease_owner is None
    assert _credits_remaining(client, headers) == (500 if refunded else 498)


def test_a_cancel_that_came_first_wins_over_the_runs_end(client: TestClient, headers: dict[str, str]) -> None:
    embedded, cluster = submit(client, headers), submit(client, headers)
    factory = app_state(client).session_factory
    with factory.begin() as session:
        assert jobs.claim(session, embedded, EXECUTOR, 300)
        for job_id in (embedded, cluster):
            job = jobs.get_job(session, job_id)
            assert job is not None and jobs.cancel_running(session, job)
    done = RunResult.success(result_url="https://example/v.mp4", output_uri="/v.mp4", metrics=METRICS)
    with factory.begin() as session:
        assert not jobs.record_result(session, embedded, done, EXECUTOR)
        completed = VideoJobStatus(phase="Completed", metrics=METRICS)
        assert not jobs.apply_videojob_status(session, cluster, completed, result_url="https://example/v.mp4")
    for job_id in (embedded, cluster):
        job = _row(client, job_id)
        assert job.status == "cancelled" and job.result_url is None and job.metrics is None
    assert _credits_remaining(client, headers) == 500  # refunded once each


def test_a_videojob_that_ended_unseen_gets_its_start_time(
    client: TestClient, headers: dict[str, str]
) -> None:
    """Queued in the database, ended in the cluster: the start comes from the VideoJob."""
    job_id = submit(client, headers)
    start = datetime.now(UTC) - timedelta(seconds=30)
    with app_state(client).session_factory.begin() as session:
        cancelled = VideoJobStatus(phase="Cancelled", start_time=start, reason=FailureReason.CANCELLED)
        assert jobs.apply_videojob_status(session, job_id, cancelled)
    job = _row(client, job_id)
    assert job.status == "cancelled" and job.started_at == start.replace(tzinfo=None)
    assert job.run_seconds is not None and job.run_seconds >= 30
