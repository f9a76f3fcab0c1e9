"""``GET /status/{job_id}/events``: a job's status as a live Server-Sent Events stream.

Each event's ``data`` is the JSON ``GET /status`` answered at that change and its ``id`` the job's
event sequence number (services.events), so ``Last-Event-ID`` resumes exactly where a dropped
connection left off. Without it the stream starts with the current status. The stream ends after
the terminal event; a comment heartbeat keeps idle connections open through proxies.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header
from sse_starlette import EventSourceResponse, ServerSentEvent

from vividflow.apiserver.deps import CallerDep, StateDep
from vividflow.apiserver.errors import ApiError, forbidden, not_found
from vividflow.apiserver.event_hub import StreamClosed, Subscription
from vividflow.apiserver.routes.common import error_responses
from vividflow.apiserver.services import events, job_status, jobs
from vividflow.apiserver.state import AppState
from vividflow.jobspec import JobStatus

router = APIRouter(tags=["jobs"])

SEND_TIMEOUT_SECONDS = 60.0
"""A client that takes no data for this long is dropped (its connection is likely dead)."""
SHUTDOWN_GRACE_SECONDS = 2.0
"""When the server stops, open streams end cleanly within this (the client resumes elsewhere)."""
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "One event per change: `id` the job's event number, `data` the JSON of "
        "`GET /status/{job_id}` at that change. Ends after completed, failed or cancelled.",
    },
    **error_responses(400, 403, 404),
}

Event = tuple[int, dict[str, Any]]
"""(sequence number, status body)."""


@router.get(
    "/status/{job_id}/events",
    summary="Follow a job's status live (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses=_RESPONSES,
)
async def job_events(
    job_id: str,
    state: StateDep,
    principal: CallerDep,
    last_event_id: Annotated[
        str | None,
        Header(description="Resume after this event (the `id` of the last event received)."),
    ] = None,
) -> EventSourceResponse:
    after = _parse_last_event_id(last_event_id)
    found = await state.run_db(job_status.status_row, state.read_engine, job_id)
    if found is None:
        raise not_found(f"No job with id {job_id}.")
    if found[0].user_id != principal.user_id:
        raise forbidden("This job belongs to another user.")
    state.stream_slots.acquire(principal.user_id)
    subscription = state.event_hub.subscribe(job_id)  # before reading: nothing committed later is missed
    shutting_down = anyio.Event()

    async def end_on_shutdown() -> None:
        await shutting_down.wait()
        subscription.close()  # the stream ends cleanly; clients resume elsewhere with Last-Event-ID

    return EventSourceResponse(
        _follow(state, subscription, after, principal.user_id),
        ping=state.settings.stream_heartbeat_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="heartbeat"),
        send_timeout=SEND_TIMEOUT_SECONDS,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        shutdown_event=shutting_down,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        data_sender_callable=end_on_shutdown,
    )


def _parse_last_event_id(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ApiError(
            400, "Invalid Last-Event-ID", ["Last-Event-ID must be the id of an event of this stream."]
        )
    return int(text)


async def _follow(
    state: AppState, subscription: Subscription, after: int | None, user_id: str
) -> AsyncIterator[ServerSentEvent]:
    subscription.cursor = after or 0
    try:
        batch, ended = await state.run_db(_backlog, state, subscription.job_id, after)
        if ended:  # the client has the job's last event already
            return
        while True:
            for seq, body in batch:
                subscription.sent(seq, body)
                yield ServerSentEvent(data=json.dumps(body, separators=(",", ":")), id=str(seq))
                if subscription.ended:
                    return
            batch = await _next_batch(state, subscription)
    except StreamClosed:
        return
    finally:
        state.event_hub.unsubscribe(subscription)
        state.stream_slots.release(user_id)


async def _next_batch(state: AppState, subscription: Subscription) -> list[Event]:
    """The events after the stream's cursor, once there are any: from the hint itself when it is
    the next one, else (a gap, a hint without its body, hints dropped) from the database."""
    while True:
        hint = await subscription.next()
        if hint.seq <= subscription.cursor:
            continue
        if hint.seq == subscription.cursor + 1 and hint.body is not None and not subscription.behind:
            return [(hint.seq, hint.body)]
        subscription.behind = False
        batch = await state.run_db(_read_after, state, subscription.job_id, subscription.cursor)
        if batch:
            return batch


def _backlog(state: AppState, job_id: str, after: int | None) -> tuple[list[Event], bool]:
    """What to send first: the events after ``after``; without it the latest (the current status).
    And whether there is nothing left to send (the job ended at or before ``after``)."""
    with state.session_factory() as session:
        if after is not None:
            batch = [(event.seq, event.body) for event in events.events_after(session, job_id, after)]
            job = jobs.get_job(session, job_id) if not batch else None
            return batch, job is not None and JobStatus(job.status).is_terminal and job.event_seq <= after
        latest = events.latest_event(session, job_id)
        if latest is not None:
            return [(latest.seq, latest.body)], False
        job = jobs.get_job(session, job_id)  # a job from before events were recorded
        if job is None:
            return [], False
        position = events.queue_position(session, job_id)
        return [(job.event_seq, events.status_body(job, position))], False


def _read_after(state: AppState, job_id: str, after: int) -> list[Event]:
    with state.session_factory() as session:
        return [(event.seq, event.body) for event in events.events_after(session, job_id, after)]
