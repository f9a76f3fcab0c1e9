"""GET /status answered from memory while its job does not change: the cache's rules, and the hints
from this and other processes that keep it exact (PostgreSQL's NOTIFY between processes)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import app_state, create_api_key, submit, truncate_postgres, wait_status
from vividflow.apiserver.app import create_app
from vividflow.apiserver.status_cache import StatusCache
from vividflow.settings import Settings

HOUR = 3600.0
"""A TTL no test outlives: an answer that turns fresh did so by a hint."""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> tuple[StatusCache, Clock]:
    clock = Clock()
    monkeypatch.setattr("vividflow.apiserver.status_cache.time.monotonic", clock)
    status_cache = StatusCache(ttl_seconds=5.0, max_entries=3)
    status_cache.active = True
    return status_cache, clock


def _store(cache: StatusCache, job_id: str, began: float, *, queued: bool = False) -> None:
    cache.store(job_id, "alice", f'{{"job_id":"{job_id}"}}'.encode(), queued=queued, read_began=began)


def test_an_answer_is_kept_for_the_ttl_and_only_while_the_channel_is_up(
    cache: tuple[StatusCache, Clock],
) -> None:
    status_cache, clock = cache
    _store(status_cache, "a", clock.now - 0.01)
    entry = status_cache.get("a")
    assert entry is not None and entry.user_id == "alice" and entry.body == b'{"job_id":"a"}'
    clock.now += 5.1
    assert status_cache.get("a") is None
    _store(status_cache, "a", clock.now - 0.01)
    status_cache.active = False
    assert status_cache.get("a") is None
    _store(status_cache, "b", clock.now - 0.01)
    status_cache.active = True
    assert status_cache.get("b") is None


def test_a_read_that_began_before_a_hint_is_not_kept(cache: tuple[StatusCache, Clock]) -> None:
    status_cache, clock = cache
    began = clock.now
    clock.now += 0.01
    status_cache.invalidate("a", status_changed=False)
    clock.now += 0.01
    _store(status_cache, "a", began)
    assert status_cache.get("a") is None
    _store(status_cache, "a", clock.now)
    clock.now += 0.01
    assert status_cache.get("a") is not None
    status_cache.invalidate("a", status_changed=False)
    assert status_cache.get("a") is None


def test_a_status_change_drops_every_queued_answer_and_progress_only_its_own(
    cache: tuple[StatusCache, Clock],
) -> None:
    status_cache, clock = cache
    began = clock.now
    clock.now += 0.01
    _store(status_cache, "queued-1", began, queued=True)
    _store(status_cache, "running", began)
    _store(status_cache, "queued-2", began, queued=True)
    status_cache.invalidate("running", status_changed=False)  # progress
    assert status_cache.get("queued-1") is not None and status_cache.get("running") is None
    status_cache.invalidate("other", status_changed=True)  # another job started: the queue moved
    assert status_cache.get("queued-1") is None and status_cache.get("queued-2") is None
    _store(status_cache, "queued-1", began, queued=True)  # read before the queue moved
    assert status_cache.get("queued-1") is None


def test_a_clear_refuses_reads_in_flight_and_the_oldest_answer_goes_first(
    cache: tuple[StatusCache, Clock],
) -> None:
    status_cache, clock = cache
    began = clock.now
    clock.now += 0.01
    status_cache.clear()
    _store(status_cache, "a", began)
    assert status_cache.get("a") is None
    clock.now += 0.01
    for job_id in ("a", "b", "c", "d"):
        _store(status_cache, job_id, clock.now - 0.001)
    assert status_cache.get("a") is None
    assert all(status_cache.get(job_id) is not None for job_id in ("b", "c", "d"))


def test_without_a_notification_channel_the_cache_is_not_used(tmp_path: Path, sqlite_template: Path) -> None:
    import shutil

    database = tmp_path / "vividflow.db"
    shutil.copy(sqlite_template, database)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{database}",
        workers=0,
        migrate_on_start=False,
        status_cache_seconds=HOUR,
    )
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": create_api_key(client, "alice@example.com")}
        job_id = submit(client, headers)
        assert client.get(f"/api/v1/status/{job_id}", headers=headers).status_code == 200
        assert not app_state(client).status_cache.active
        assert app_state(client).status_cache.get(job_id) is None


@pytest.fixture
def pg_client(tmp_path: Path, migrated_postgres_url: str) -> Iterator[TestClient]:
    truncate_postgres(migrated_postgres_url)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=migrated_postgres_url,
        workers=0,
        migrate_on_start=False,
        public_url="http://testserver",
        status_cache_seconds=HOUR,
    )
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 30
        while not app_state(client).status_cache.active:
            assert time.monotonic() < deadline, "the LISTEN channel did not come up"
            time.sleep(0.02)
        yield client


def _cached_body(client: TestClient, job_id: str) -> bytes | None:
    entry = app_state(client).status_cache.get(job_id)
    return None if entry is None else entry.body


def _in_another_process(database_url: str, code: str) -> None:
    """Run ``code`` (with ``session`` open in a transaction) in a fresh interpreter: its commit
    reaches the app only through PostgreSQL's NOTIFY."""
    program = (
        "from sqlalchemy import create_engine\n"
        "from sqlalchemy.orm import sessionmaker\n"
        "from vividflow.apiserver.services import jobs, retention\n"
        "from vividflow.jobspec import JobStatus\n"
        f"engine = create_engine({database_url!r})\n"
        "with sessionmaker(engine).begin() as session:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
    )
    subprocess.run([sys.executable, "-c", program], check=True, timeout=120)


def test_a_polled_job_is_answered_from_memory_until_this_process_changes_it(pg_client: TestClient) -> None:
    headers = {"X-API-Key": create_api_key(pg_client, "alice@example.com")}
    job_id = submit(pg_client, headers)
    first = pg_client.get(f"/api/v1/status/{job_id}", headers=headers)
    assert first.status_code == 200 and first.json()["status"] == "queued"
    assert _cached_body(pg_client, job_id) == first.content
    assert pg_client.get(f"/api/v1/status/{job_id}", headers=headers).content == first.content
    # Another user is refused a cached answer as an uncached one.
    other = {"X-API-Key": create_api_key(pg_client, "mallory@example.com")}
    refused = pg_client.get(f"/api/v1/status/{job_id}", headers=other)
    assert refused.status_code == 403 and "another user" in refused.json()["details"][0]
    # This process's own change is seen by the very next read.
    assert pg_client.post(f"/api/v1/cancel/{job_id}", headers=headers).status_code == 200
    assert pg_client.get(f"/api/v1/status/{job_id}", headers=headers).json()["status"] == "cancelled"


def test_changes_committed_by_other_processes_reach_cached_answers(
    pg_client: TestClient, migrated_postgres_url: str
) -> None:
    headers = {"X-API-Key": create_api_key(pg_client, "alice@example.com")}
    first, second = submit(pg_client, headers), submit(pg_client, headers)
    assert pg_client.get(f"/api/v1/status/{second}", headers=headers).json()["queue_position"] == 1
    assert _cached_body(pg_client, second) is not None
    # The job ahead ends elsewhere: the second's queue position moves although it did not change.
    _in_another_process(
        migrated_postgres_url,
        f"assert jobs.finish(session, {first!r}, JobStatus.CANCELLED, from_=[JobStatus.QUEUED])",
    )
    moved = wait_status(
        pg_client, headers, second, {"queued"}, timeout=30, check=lambda b: b["queue_position"] == 0
    )
    assert moved["queue_position"] == 0
    assert wait_status(pg_client, headers, first, timeout=30)["status"] == "cancelled"
    # The result expiring (no event: a hint alone) reaches the cached answer of a finished job.
    finish = f"jobs.finish(session, {second!r}, JobStatus.COMPLETED, from_=[JobStatus.QUEUED], result_url='https://x/v.mp4')"
    _in_another_process(migrated_postgres_url, f"assert {finish}")
    done = wait_status(pg_client, headers, second, timeout=30)
    assert done["status"] == "completed" and "result_expired" not in done
    assert _cached_body(pg_client, second) is not None
    _in_another_process(migrated_postgres_url, f"assert retention.mark_expired(session, [{second!r}]) == 1")
    expired = wait_status(
        pg_client, headers, second, timeout=30, check=lambda b: b.get("result_expired") is True
    )
    assert expired["result_url"] == "https://x/v.mp4"
