"""Following a job: its live status stream (``GET /status/{id}/events``, parsed by httpx-sse), resumed
with ``Last-Event-ID`` after a dropped connection, or polling ``GET /status`` on a server without one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from vividflow.client.api import ApiClient, ApiError, Body, raise_for_error
from vividflow.jobspec import TERMINAL_STATUSES

TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)


@dataclass(frozen=True)
class Retry:
    """How often to try again after a connection fails without news: ``attempts`` times in a row,
    waiting ``first_delay`` seconds, doubled each time up to ``max_delay`` (or the server's
    ``Retry-After``). Every status received starts the count afresh."""

    attempts: int = 6
    first_delay: float = 0.5
    max_delay: float = 10.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        backoff = min(self.max_delay, self.first_delay * 2.0 ** (failures - 1))
        return max(backoff, min(retry_after, self.max_delay)) if retry_after is not None else backoff


Sleep = Callable[[float], None]


def follow(
    client: ApiClient,
    job_id: str,
    *,
    retry: Retry = Retry(),
    poll_interval: float = 1.0,
    sleep: Sleep = time.sleep,
) -> Iterator[Body]:
    """Each status of the job as it changes (the current one first), until a terminal one."""
    cursor = _Cursor()
    failures = 0
    while True:
        try:
            for body in _read_stream(client, job_id, cursor):
                failures = 0
                yield body
                if body.get("status") in TERMINAL:
                    return
            problem = ApiError(None, "The status stream ended before the job did")
        except _NoStream:
            # A missing job, or a server without streams? GET /status tells them apart (it raises
            # the job's 404 if it is the job).
            current = client.status(job_id)
            yield from poll(client, job_id, first=current, interval=poll_interval, retry=retry, sleep=sleep)
            return
        except httpx.TransportError as error:
            problem = ApiError.unreachable(client.base, error)
        except ApiError as error:
            if not error.is_transient:
                raise
            problem = error
        failures += 1
        if failures > retry.attempts:
            raise ApiError(
                problem.status_code,
                f"Lost the status stream of job {job_id}",
                [problem.error, *problem.details, f"gave up after {retry.attempts} retries"],
                body=problem.body,
            )
        sleep(retry.delay(failures, problem.retry_after))


@dataclass
class _Cursor:
    last_id: str | None = None
    """The id of the last event received: where a new connection resumes."""


class _NoStream(Exception):
    """The server answered 404 for the job's stream."""


def _read_stream(client: ApiClient, job_id: str, cursor: _Cursor) -> Iterator[Body]:
    """The statuses of one connection to the job's stream, from after ``cursor``."""
    with client.events(job_id, cursor.last_id) as source:
        response = source.response
        if response.status_code == 404:
            raise _NoStream
        raise_for_error(response)
        _check_event_stream(response)
        for event in source.iter_sse():
            if event.event != "message" or not event.data:
                continue  # events of other types are for other clients
            try:
                body = event.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise ApiError(
                    response.status_code,
                    "The status stream sent an event that is not a JSON object",
                    [event.data[:300]],
                )
            cursor.last_id = event.id or cursor.last_id
            yield body


def poll(
    client: ApiClient,
    job_id: str,
    *,
    first: Body | None = None,
    interval: float = 1.0,
    retry: Retry = Retry(),
    sleep: Sleep = time.sleep,
) -> Iterator[Body]:
    """Each status of the job that differs from the one before, from ``GET /status`` every
    ``interval`` seconds, until a terminal one."""
    body = first
    last: Body | None = None
    failures = 0
    while True:
        if body is None:
            try:
                body = client.status(job_id)
            except ApiError as error:
                failures += 1
                if not error.is_transient or failures > retry.attempts:
                    raise
                sleep(retry.delay(failures, error.retry_after))
                continue
            failures = 0
        if body != last:
            yield body
            last = body
        if body.get("status") in TERMINAL:
            return
        body = None
        sleep(interval)


def _check_event_stream(response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        raise ApiError(
            response.status_code,
            "The server did not answer with an event stream",
            [f"Content-Type: {content_type or '(none)'}"],
        )
