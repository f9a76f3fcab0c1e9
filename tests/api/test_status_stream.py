"""``GET /status/{id}/events``: a job's life as a live stream, served by real uvicorn, on SQLite and
PostgreSQL; resumed with Last-Event-ID; fed by another server's executor (PostgreSQL NOTIFY, Redis
pub/sub, polling); bounded per user."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import MakeSettings, truncate_postgres
from tests.fixtures.fake_vertex import FakeVertex, Scenario
from tests.serve import create_key, running_server, settings_env
from tests.served_app import (
    TIMEOUT,
    StreamEvent,
    assert_life_in_order,
    follow,
    new_key,
    read_events,
    serving,
    status_events,
    stream,
    submit,
)
from vividflow.apiserver.db.migrate import upgrade

TINY_WAN = {"width": 32, "height": 32, "length": 9, "steps": 4, "seed": 7}


def test_a_tiny_wan_job_streams_every_state_and_resumes_after_a_drop(
    make_settings: MakeSettings, tiny_wan_model_dir: Path
) -> None:
    settings = make_settings(workers=1, wan_model=str(tiny_wan_model_dir), public_url="http://127.0.0.1")
    with serving(settings) as (url, state):
        headers = new_key(state, "wanda@example.com")
        job_id = submit(url, headers, "wan2.1", **TINY_WAN)

        # Read until the job is processing, then drop the connection.
        seen: list[StreamEvent] = []
        with stream(url, headers, job_id, **{"Last-Event-ID": "0"}) as response:
            for event in status_events(response):
                seen.append(event)
                if event.data and event.data["status"] != "queued":
                    break
        assert seen[0].data and seen[0].data["status"] == "queued"

        rest = follow(url, headers, job_id, last_event_id=seen[-1].id)
        events = seen + rest
        assert_life_in_order(events)
        final = events[-1].data or {}
        assert final["status"] == "completed", final
        assert final == httpx.get(f"{url}/api/v1/status/{job_id}", headers=headers).json()
        processing = [e for e in events if e.data and e.data["status"] == "processing"]
        assert len(processing) >= 2  # the start, then the steps' progress

        # The whole life replays from the start, the same events; a finished job's stream without
        # Last-Event-ID is its end alone.
        assert [(e.id, e.data) for e in follow(url, headers, job_id, "0")] == [(e.id, e.data) for e in events]
        (only,) = follow(url, headers, job_id)
        assert (only.id, only.data) == (events[-1].id, final)
        assert follow(url, headers, job_id, events[-1].id) == []


def test_the_stream_answers_like_status_for_others_and_bad_input(make_settings: MakeSettings) -> None:
    with serving(make_settings(max_streams_per_user=2)) as (url, state):
        alice, bob = new_key(state, "alice@example.com"), new_key(state, "bob@example.com")
        job_id = submit(url, alice)
        events_url = f"{url}/api/v1/status/{job_id}/events"

        for headers, code in ((bob, 403), ({}, 401), ({"X-API-Key": "vf_nope"}, 401)):
            response = httpx.get(events_url, headers=headers, timeout=TIMEOUT)
            plain = httpx.get(f"{url}/api/v1/status/{job_id}", headers=headers, timeout=TIMEOUT)
            assert response.status_code == plain.status_code == code
            assert set(response.json()) >= {"error", "details"}
        missing = httpx.get(f"{url}/api/v1/status/no-such-job/events", headers=alice, timeout=TIMEOUT)
        assert missing.status_code == 404 and missing.json()["details"]
        for bad in ("abc", "-1", "1.5", "1" * 19):
            response = httpx.get(events_url, headers={**alice, "Last-Event-ID": bad}, timeout=TIMEOUT)
            assert response.status_code == 400, bad
            assert response.json()["error"] == "Invalid Last-Event-ID"

        # Two streams are open; a third is refused until one closes. (Each stream is read through one
        # generator: dropping a reader closes its connection.)
        with stream(url, alice, job_id) as first, stream(url, alice, job_id) as second:
            assert first.status_code == second.status_code == 200
            readers = [status_events(first), status_events(second)]
            assert [next(reader).id for reader in readers] == ["1", "1"]
            refused = httpx.get(events_url, headers=alice, timeout=TIMEOUT)
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
            assert refused.json()["error"] == "Too many status streams"
            with stream(url, bob, submit(url, bob)) as others:
                assert others.status_code == 200  # the bound is per user
        with stream(url, alice, job_id) as again:
            assert again.status_code == 200


def test_heartbeats_and_queue_positions_while_queued(make_settings: MakeSettings) -> None:
    with serving(make_settings(stream_heartbeat_seconds=0.2)) as (url, state):
        headers = new_key(state, "quinn@example.com")
        first, second = submit(url, headers), submit(url, headers)
        with stream(url, headers, second) as response:
            events = read_events(response)
            opening = next(events)
            assert opening.data and opening.data["status"] == "queued" and opening.data["queue_position"] == 1
            beat = next(events)
            assert beat.data is None and beat.comments == ["heartbeat"]
            cancelled = httpx.post(f"{url}/api/v1/cancel/{first}", headers=headers, timeout=TIMEOUT)
            assert cancelled.status_code == 200
            moved = next(event for event in events if event.data is not None)
            assert moved.data and moved.data["status"] == "queued" and moved.data["queue_position"] == 0
            assert int(moved.id or 0) == int(opening.id or 0) + 1
            httpx.post(f"{url}/api/v1/cancel/{second}", headers=headers, timeout=TIMEOUT)
            end = next(event for event in events if event.data is not None)
            assert end.data and end.data["status"] == "cancelled"
            # The stream ends: no event follows the terminal one. (A heartbeat comment may still slip
            # in before the connection closes: sse-starlette's ping task runs beside the events.)
            assert next((event for event in events if event.data is not None), None) is None


@pytest.mark.parametrize("channel", ["polling", "redis", "notify"])
def test_a_stream_sees_a_job_run_by_another_server(
    channel: str, tmp_path: Path, fake_vertex: FakeVertex, request: pytest.FixtureRequest
) -> None:
    """Server A (no workers) streams; server B, a separate process on the same database, runs the job.
    Only A's channel tells it about B's changes: NOTIFY on PostgreSQL, Redis pub/sub, or polling."""
    if channel == "notify":
        database_url: str = request.getfixturevalue("migrated_postgres_url")
        truncate_postgres(database_url)
    else:
        database_url = f"sqlite:///{tmp_path / 'shared.db'}"
        upgrade(database_url)
    common: dict[str, Any] = {"database_url": database_url, "data_dir": tmp_path / "data"}
    if channel == "redis":
        common["redis_url"] = request.getfixturevalue("redis_url")
    release = threading.Event()
    fake_vertex.set_scenario(Scenario(until=release))
    key = {"X-API-Key": create_key(database_url, "remy@example.com")}
    env_a = settings_env(workers=0, **common)
    env_b = {**settings_env(workers=1, **common), **fake_vertex.settings_env()}
    with running_server(env_a, tmp_path, name="a") as a, running_server(env_b, tmp_path, name="b") as b:
        job_id = submit(b.url, key)
        with stream(a.url, key, job_id, **{"Last-Event-ID": "0"}) as response:
            assert response.status_code == 200
            events: list[StreamEvent] = []
            for event in status_events(response):
                events.append(event)
                if event.data and event.data["status"] == "processing" and not release.is_set():
                    release.set()  # B's job may finish now
        assert_life_in_order(events)
        assert events[-1].data and events[-1].data["status"] == "completed"
        assert events[-1].data == httpx.get(f"{a.url}/api/v1/status/{job_id}", headers=key).json()


def test_a_stopping_server_ends_its_streams_cleanly(tmp_path: Path) -> None:
    """SIGTERM: open streams end as complete responses (a client then resumes elsewhere with
    Last-Event-ID), and the server stops without waiting for them."""
    database_url = f"sqlite:///{tmp_path / 'v.db'}"
    upgrade(database_url)
    key = {"X-API-Key": create_key(database_url, "stella@example.com")}
    with running_server(
        settings_env(database_url=database_url, workers=0, data_dir=tmp_path / "d"), tmp_path
    ) as a:
        job_id = submit(a.url, key)
        with stream(a.url, key, job_id) as response:
            events = status_events(response)
            assert next(events).id == "1"
            a.stop()
            assert next(events, None) is None  # the body ended properly: no protocol error
        assert a.process.returncode is not None
        assert "ERROR" not in a.log() and "Traceback" not in a.log()
