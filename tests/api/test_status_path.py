"""The status path's fast parts: status reads from the event loop, one Redis round trip for all
rate-limit windows, and the frozen startup objects."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from limits import parse

from tests.api.conftest import MakeSettings, app_state, create_api_key, submit
from vividflow.apiserver.app import create_app
from vividflow.apiserver.ratelimit import RateLimiter, RateLimitState
from vividflow.apiserver.services import job_status
from vividflow.apiserver.services.job_status import StatusReader
from vividflow.apiserver.services.keys import Principal
from vividflow.settings import Settings

ALICE = Principal(user_id="alice", key_id="alice-key", email="alice@example.com")


def _fields(state: RateLimitState) -> tuple[bool, int, int]:
    return state.allowed, state.limit, state.remaining


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_the_tightest_window_answers_and_a_refusal_counts_no_later_window(
    storage: str, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("fresh_redis_url") if storage == "redis" else None
    # A day and a month: no window rolls over in mid-test.
    limiter = RateLimiter(["5/day", "8/month"], redis_url, key_limits=["3/day"])

    async def run() -> tuple[list[tuple[bool, int, int]], tuple[int, float, int, float]]:
        states = [_fields(await limiter.hit(ALICE)) for _ in range(6)]
        month = parse("8/month")
        counts = await limiter._windows.get_sliding_window(month.key_for("user", "alice"), month.get_expiry())
        return states, counts

    states, counts = asyncio.run(run())
    # Windows go in order (the user's, then the key's): the key refuses the 4th and 5th after the
    # user's windows counted them; the user's day refuses the 6th, which the month never sees.
    assert states == [(True, 3, 2), (True, 3, 1), (True, 3, 0), (False, 3, 0), (False, 3, 0), (False, 5, 0)]
    assert counts[2] == 5


def test_redis_counts_on_the_keys_limits_reads(fresh_redis_url: str) -> None:
    """The batched script and `limits`' own storage see the same counters, so API processes of this
    and of the previous release count together."""
    limiter = RateLimiter(["10/day"], fresh_redis_url)
    day = parse("10/day")

    async def run() -> tuple[int, int]:
        await limiter.hit(ALICE)
        await limiter._windows.acquire_sliding_window_entry(
            day.key_for("user", "alice"), day.amount, day.get_expiry()
        )
        state = await limiter.hit(ALICE)
        counts = await limiter._windows.get_sliding_window(day.key_for("user", "alice"), day.get_expiry())
        return state.remaining, counts[2]

    assert asyncio.run(run()) == (7, 3)


def _status_fields(found: Any) -> tuple[Any, ...]:
    row, position = found
    return (row.id, row.user_id, row.status, row.model, row.created_at, row.metrics, position)


def test_the_reader_reads_what_status_row_reads(client: TestClient, headers: dict[str, str]) -> None:
    """On the app's own loop: PostgreSQL's asyncio connections, SQLite's reads on the loop."""
    state, portal = app_state(client), client.portal
    assert portal is not None
    first, second = submit(client, headers), submit(client, headers)
    for job_id in (first, second):
        via_loop = portal.call(state.status_reader.read, job_id)
        assert _status_fields(via_loop) == _status_fields(job_status.status_row(state.read_engine, job_id))
    assert _status_fields(portal.call(state.status_reader.read, second))[-1] == 1
    assert portal.call(state.status_reader.read, "no-such-job") is None


def test_status_through_the_reader_keeps_its_answers(make_settings: MakeSettings) -> None:
    with TestClient(create_app(make_settings())) as client:
        alice = {"X-API-Key": create_api_key(client, "alice@example.com")}
        bob = {"X-API-Key": create_api_key(client, "bob@example.com")}
        job_id = submit(client, alice)
        body = client.get(f"/api/v1/status/{job_id}", headers=alice).json()
        assert (body["status"], body["queue_position"]) == ("queued", 0)
        assert client.get(f"/api/v1/status/{job_id}", headers=bob).status_code == 403
        assert client.get("/api/v1/status/no-such-job", headers=alice).status_code == 404


class _RecordingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(1)
        self.submitted = threading.Event()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted.set()
        return super().submit(fn, *args, **kwargs)


def test_a_sqlite_read_that_meets_a_lock_waits_for_it_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{path}",
        workers=0,
        public_url="http://testserver",
    )
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": create_api_key(client, "alice@example.com")}
        job_id = submit(client, headers)
        engine = app_state(client).read_engine
    executor = _RecordingExecutor()
    reader = StatusReader(engine, executor, pool_size=1)
    # A connection in exclusive locking mode keeps every other reader out until it closes.
    locker = sqlite3.connect(path)
    locker.execute("PRAGMA locking_mode=EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")

    async def run() -> Any:
        read = asyncio.ensure_future(reader.read(job_id))
        assert await asyncio.to_thread(executor.submitted.wait, 30)  # handed to the database threads
        assert not read.done()  # ...where it waits for the lock
        locker.rollback()
        locker.close()
        return await read

    try:
        found = asyncio.run(run())
    finally:
        executor.shutdown()
        engine.dispose()
    assert found is not None and found[0].id == job_id


def test_the_app_freezes_its_startup_objects_while_it_runs(client: TestClient) -> None:
    assert gc.get_freeze_count() > 0


def test_status_authenticates_like_every_api_key_endpoint(make_settings: MakeSettings) -> None:
    """The status route calls `authenticate` itself: the same headers, refusals and OpenAPI security
    as the routes that depend on the principal."""
    with TestClient(create_app(make_settings(rate_limits=["3/day"]))) as client:
        alice = {"X-API-Key": create_api_key(client, "alice@example.com")}
        job_id = submit(client, alice)  # the first of alice's 3
        remaining = [
            client.get(f"/api/v1/status/{job_id}", headers=alice).headers.get("X-RateLimit-Remaining")
            for _ in range(2)
        ]
        assert remaining == ["1", "0"]
        refused = client.get(f"/api/v1/status/{job_id}", headers=alice)
        assert refused.status_code == 429 and refused.json()["error"] == "Rate limit exceeded"
        assert refused.headers["Retry-After"]
        missing = client.get(f"/api/v1/status/{job_id}")
        assert missing.status_code == 401 and missing.json()["details"]
        operations = client.get("/openapi.json").json()["paths"]
    assert operations["/api/v1/status/{job_id}"]["get"]["security"] == [{"APIKeyHeader": []}]
    assert operations["/api/v1/usage"]["get"]["security"] == [{"APIKeyHeader": []}]
