"""Status bodies per state, cancel, history, and isolation between users."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import app_state, create_api_key, submit
from vividflow.apiserver.services import jobs, leases
from vividflow.jobspec import FailureReason, JobMetrics, JobStatus, RunResult

EXECUTOR = "test-executor"
LEASE = 300.0


def test_queued_status_body(client: TestClient, headers: dict[str, str], png: bytes) -> None:
    first = submit(client, headers)
    second = submit(client, headers)
    body = client.get(f"/api/v1/status/{second}", headers=headers).json()
    assert body["job_id"] == second and body["status"] == "queued" and body["model"] == "wan2.1"
    assert body["message"] == "Job is in queue. It will start processing shortly."
    assert body["queue_position"] == 1
    assert len(body["created_at"]) == 19  # 2025-01-15T10:30:00
    assert client.get(f"/api/v1/status/{first}", headers=headers).json()["queue_position"] == 0


def test_processing_completed_and_failed_bodies(
    client: TestClient, headers: dict[str, str], png: bytes
) -> None:
    done, broken = submit(client, headers), submit(client, headers)
    factory = app_state(client).session_factory
    with factory.begin() as session:
        assert leases.claim_next_queued(session, EXECUTOR, LEASE) is not None
        jobs.record_progress(session, done, 40)
    body = client.get(f"/api/v1/status/{done}", headers=headers).json()
    assert body["status"] == "processing" and body["progress"] == 40
    assert body["message"] == "Job is currently being processed." and "updated_at" in body

    metrics = JobMetrics(spin_up_time=1.5, generation_time=3.25, total_time=5.0, upload_time=0.25)
    with factory.begin() as session:
        jobs.record_result(
            session,
            done,
            RunResult.success(result_url="https://example/v.mp4", output_uri="/x.mp4", metrics=metrics),
            EXECUTOR,
        )
        assert leases.claim_next_queued(session, EXECUTOR, LEASE) is not None
        jobs.record_result(
            session, broken, RunResult.failure(FailureReason.INVALID_INPUT, "bad image"), EXECUTOR
        )
    body = client.get(f"/api/v1/status/{done}", headers=headers).json()
    assert body["status"] == "completed" and body["message"] == "Job completed successfully."
    assert body["result_url"] == "https://example/v.mp4"
    assert body["metrics"] == {
        "generation_time": 3.25,
        "spin_up_time": 1.5,
        "total_time": 5.0,
        "upload_time": 0.25,
    }
    assert "progress" not in body and "error_message" not in body
    body = client.get(f"/api/v1/status/{broken}", headers=headers).json()
    assert body["status"] == "failed" and body["error_message"] == "bad image"
    assert body["message"] == "Job failed. Check error details." and body["failure_reason"] == "invalid_input"


def test_cancel_queued_only(client: TestClient, headers: dict[str, str], png: bytes) -> None:
    queued, running = submit(client, headers), submit(client, headers)
    with app_state(client).session_factory.begin() as session:
        claimed = leases.claim_next_queued(session, EXECUTOR, LEASE)
        assert claimed is not None and claimed.id == queued
    response = client.post(f"/api/v1/cancel/{queued}", headers=headers)
    assert response.status_code == 409
    assert response.json() == {
        "error": "Job cannot be cancelled",
        "details": ["The job is processing; only queued jobs can be cancelled."],
    }

    response = client.post(f"/api/v1/cancel/{running}", headers=headers)
    assert response.status_code == 200
    assert response.json() == {"message": "Job cancelled successfully", "job_id": running}
    body = client.get(f"/api/v1/status/{running}", headers=headers).json()
    assert body["status"] == "cancelled" and body["message"] == "Job was cancelled."
    assert client.post(f"/api/v1/cancel/{running}", headers=headers).status_code == 409
    with app_state(client).session_factory.begin() as session:
        assert leases.claim_next_queued(session, EXECUTOR, LEASE) is None  # cancelled jobs leave the queue


def test_unknown_job_is_404(client: TestClient, headers: dict[str, str]) -> None:
    for path in (f"/api/v1/status/{uuid.uuid4()}", f"/api/v1/cancel/{uuid.uuid4()}", "/api/v1/status/nope"):
        method = client.post if "cancel" in path else client.get
        response = method(path, headers=headers)
        assert response.status_code == 404
        assert response.json()["error"] == "Not found"


def test_users_cannot_see_or_cancel_each_others_jobs(
    client: TestClient, headers: dict[str, str], png: bytes
) -> None:
    job_id = submit(client, headers, prompt="alice's secret")
    bob = {"X-API-Key": create_api_key(client, "bob@example.com")}
    for response in (
        client.get(f"/api/v1/status/{job_id}", headers=bob),
        client.post(f"/api/v1/cancel/{job_id}", headers=bob),
    ):
        assert response.status_code == 403
        assert response.json() == {"error": "Access denied", "details": ["This job belongs to another user."]}
    assert client.get("/api/v1/history", headers=bob).json() == {"count": 0, "jobs": []}
    assert client.get("/api/v1/usage", headers=bob).json()["total_jobs"] == 0
    assert client.get(f"/api/v1/status/{job_id}", headers=headers).json()["status"] == "queued"


def test_history_newest_first_with_limits(client: TestClient, headers: dict[str, str], png: bytes) -> None:
    ids = [submit(client, headers, prompt=f"prompt {n}") for n in range(3)]
    body = client.get("/api/v1/history", headers=headers).json()
    assert body["count"] == 3
    assert [job["job_id"] for job in body["jobs"]] == ids[::-1]
    assert set(body["jobs"][0]) == {"job_id", "status", "model", "prompt", "result_url", "created_at"}
    assert body["jobs"][0]["prompt"] == "prompt 2"
    assert client.get("/api/v1/history?limit=2", headers=headers).json()["count"] == 2
    for bad in ("0", "101", "ten"):
        response = client.get(f"/api/v1/history?limit={bad}", headers=headers)
        assert response.status_code == 400
        assert response.json()["details"][0].startswith("limit:")


def test_history_default_limit_is_20(client: TestClient, headers: dict[str, str], png: bytes) -> None:
    for _ in range(21):
        submit(client, headers)
    assert client.get("/api/v1/history", headers=headers).json()["count"] == 20
    assert client.get("/api/v1/history?limit=100", headers=headers).json()["count"] == 21


def test_status_after_terminal_never_moves_back(
    client: TestClient, headers: dict[str, str], png: bytes
) -> None:
    job_id = submit(client, headers)
    with app_state(client).session_factory.begin() as session:
        assert jobs.cancel_queued(session, jobs.get_job(session, job_id))  # type: ignore[arg-type]
        assert not jobs.transition(session, job_id, JobStatus.PROCESSING, [JobStatus.QUEUED])
        late = RunResult.failure(FailureReason.INTERNAL, "late")
        assert not jobs.record_result(session, job_id, late, EXECUTOR)
    assert client.get(f"/api/v1/status/{job_id}", headers=headers).json()["status"] == "cancelled"


def _credits_remaining(client: TestClient, headers: dict[str, str]) -> int:
    remaining: int = client.get("/api/v1/usage", headers=headers).json()["credits_remaining"]
    return remaining


@pytest.mark.parametrize(
    ("reason", "refunded"),
    [
        (FailureReason.MODEL_LOAD_FAILED, True),
        (FailureReason.INTERRUPTED, True),
        (FailureReason.WORKER_CRASHED, True),
        (FailureReason.INTERNAL, True),
        (FailureReason.UPSTREAM_ERROR, True),
        (FailureReason.IMAGE_PULL_FAILED, True),
        (FailureReason.CANCELLED, True),
        (FailureReason.INVALID_INPUT, False),
        (FailureReason.OUT_OF_MEMORY, False),
        (FailureReason.TIMEOUT, False),  # it ran: its own run time
    ],
)
def test_failures_that_are_not_the_inputs_fault_are_refunded(
    client: TestClient, headers: dict[str, str], reason: FailureReason, refunded: bool
) -> None:
    job_id = submit(client, headers)
    assert _credits_remaining(client, headers) == 499
    with app_state(client).session_factory.begin() as session:
        assert leases.claim_next_queued(session, EXECUTOR, LEASE) is not None
        assert jobs.record_result(session, job_id, RunResult.failure(reason, "it failed"), EXECUTOR)
    assert _credits_remaining(client, headers) == (500 if refunded else 499)
    expected = "cancelled" if reason is FailureReason.CANCELLED else "failed"
    assert client.get(f"/api/v1/status/{job_id}", headers=headers).json()["status"] == expected


def test_a_timeout_before_the_job_ran_is_the_platforms(client: TestClient, headers: dict[str, str]) -> None:
    job_id = submit(client, headers)
    with app_state(client).session_factory.begin() as session:
        assert jobs.finish(
            session, job_id, JobStatus.FAILED, reason=FailureReason.TIMEOUT, message="no runner"
        )
    assert _credits_remaining(client, headers) == 500


def test_an_executor_that_lost_its_lease_cannot_write_the_result(
    client: TestClient, headers: dict[str, str]
) -> None:
    job_id = submit(client, headers)
    factory = app_state(client).session_factory
    with factory.begin() as session:
        assert leases.claim_next_queued(session, "old-executor", lease_seconds=0) is not None
        assert leases.recover_expired(session, max_attempts=3, message="gone") == (1, 0)
        assert leases.claim_next_queued(session, "new-executor", LEASE) is not None
    late = RunResult.failure(FailureReason.INTERNAL, "too late")
    with factory.begin() as session:
        assert not jobs.record_progress(session, job_id, 50, "old-executor")
        assert not jobs.record_result(session, job_id, late, "old-executor")
        assert jobs.record_progress(session, job_id, 50, "new-executor")
    body = client.get(f"/api/v1/status/{job_id}", headers=headers).json()
    assert body["status"] == "processing" and body["progress"] == 50


def test_usage_stays_consistent_while_jobs_end_concurrently(
    client: TestClient, headers: dict[str, str]
) -> None:
    """Jobs failing (refunded or not) and new ones submitted at once: every credit is accounted for."""
    ids = [submit(client, headers) for _ in range(12)]
    factory = app_state(client).session_factory
    with factory.begin() as session:
        for _ in ids:
            assert leases.claim_next_queued(session, EXECUTOR, LEASE) is not None
    reasons = [FailureReason.INTERNAL, FailureReason.INVALID_INPUT] * 6
    barrier = threading.Barrier(len(ids) + 4)

    def end(job_id: str, reason: FailureReason) -> None:
        barrier.wait()
        with factory.begin() as session:
            jobs.record_result(session, job_id, RunResult.failure(reason, "x"), EXECUTOR)

    def submit_one(_: int) -> str:
        barrier.wait()
        return submit(client, headers)

    with ThreadPoolExecutor(len(ids) + 4) as pool:
        ended = [pool.submit(end, job_id, reason) for job_id, reason in zip(ids, reasons, strict=True)]
        added = [pool.submit(submit_one, n) for n in range(4)]
        for future in (*ended, *added):
            future.result()
    # 12 + 4 accepted, 6 of them refunded.
    assert _credits_remaining(client, headers) == 500 - 16 + 6
    usage = client.get("/api/v1/usage", headers=headers).json()
    assert usage["failed_jobs"] == 12 and usage["queued_jobs"] == 4
