"""An app served by a real uvicorn server on a thread of the test process, for what the in-process
TestClient cannot do: responses that stream without end (status streams), several clients at once;
and helpers to follow a job's status stream.

    with served_app(create_app(settings)) as url:
        httpx.get(f"{url}/healthz")
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from tests.api.conftest import image_bytes
from tests.ports import free_port
from vividflow.apiserver.app import create_app
from vividflow.apiserver.services import keys
from vividflow.apiserver.state import AppState
from vividflow.settings import Settings


@contextmanager
def served_app(app: FastAPI, timeout: float = 60.0, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` (its lifespan included) until the block ends; its base URL. ``port`` (default: a
    free one) lets a test know the URL before the app is made, e.g. for ``Settings.public_url``."""
    if port is None:
        port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="served-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the served app did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class StreamEvent:
    id: str | None
    data: dict[str, Any] | None
    comments: list[str] = field(default_factory=list)
    """Comment lines (heartbeats) received before this event."""


def read_events(response: httpx.Response) -> Iterator[StreamEvent]:
    """The Server-Sent Events of a streamed response, as they arrive (comments kept)."""
    event_id: str | None = None
    data: list[str] = []
    comments: list[str] = []
    for line in response.iter_lines():
        if line.startswith(":"):
            comments.append(line[1:].strip())
            if not data and event_id is None:
                yield StreamEvent(None, None, comments)
                comments = []
            continue
        if line == "":
            if data or event_id is not None:
                yield StreamEvent(event_id, json.loads("\n".join(data)) if data else None, comments)
                event_id, data, comments = None, [], []
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            event_id = value
        elif name == "data":
            data.append(value)


def status_events(response: httpx.Response) -> Iterator[StreamEvent]:
    """Only the events that carry a status (heartbeats skipped)."""
    return (event for event in read_events(response) if event.data is not None)


TIMEOUT = httpx.Timeout(10.0, read=120.0)


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[str, AppState]]:
    app: FastAPI = create_app(settings)
    with served_app(app) as url:
        yield url, app.state.vivid


def new_key(state: AppState, email: str) -> dict[str, str]:
    with state.session_factory.begin() as session:
        return {"X-API-Key": keys.create_key(session, keys.get_or_create_user(session, email), "t").secret}


def submit(url: str, headers: dict[str, str], model: str = "veo3.1", **fields: Any) -> str:
    data = {"prompt": "a lighthouse in a storm", "model": model, **{k: str(v) for k, v in fields.items()}}
    files = {"image": ("in.png", image_bytes("PNG", (48, 32)), "image/png")}
    response = httpx.post(f"{url}/api/v1/generate", headers=headers, data=data, files=files, timeout=30)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def stream(url: str, headers: dict[str, str], job_id: str, **extra: str) -> Any:
    return httpx.stream(
        "GET", f"{url}/api/v1/status/{job_id}/events", headers={**headers, **extra}, timeout=TIMEOUT
    )


def follow(
    url: str, headers: dict[str, str], job_id: str, last_event_id: str | None = None
) -> list[StreamEvent]:
    """Every status event until the stream ends."""
    extra = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    with stream(url, headers, job_id, **extra) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(status_events(response))


def assert_life_in_order(events: list[StreamEvent]) -> None:
    """Ids 1, 2, 3, … without a gap; queued, then processing with rising progress, then the end."""
    assert [int(event.id or 0) for event in events] == list(range(1, len(events) + 1))
    statuses = [event.data["status"] for event in events if event.data]
    order = {"queued": 0, "processing": 1, "completed": 2, "failed": 2, "cancelled": 2}
    assert statuses == sorted(statuses, key=order.__getitem__), statuses
    progress = [
        event.data["progress"] for event in events if event.data and event.data["status"] == "processing"
    ]
    assert progress == sorted(progress) and len(set(progress)) == len(progress), progress
