"""Wakes the status streams of this API process when an event of the job they follow commits,
whichever process committed it.

Sources, all feeding the same :meth:`EventHub.announce`:

- this process's own commits (services.events listeners: the embedded executor, the VideoJob mirror
  and the request handlers run here);
- other processes' commits through the deployment's channel: PostgreSQL ``LISTEN`` (the NOTIFY is
  sent inside the committing transaction), else Redis pub/sub when ``VIVID_REDIS_URL`` is set (this
  process publishes its own commits);
- polling ``jobs.event_seq`` of the followed jobs: every ``event_poll_seconds`` without a channel
  (SQLite), and every few seconds as a safety net with one (a dropped LISTEN connection).

A notification is only a hint: a stream that finds a gap in the sequence reads the missing events
from the database, so hints may be lost, repeated or reordered. Streams are asyncio tasks: an idle
server holds no thread per stream. The hub also refreshes the queue position of followed queued
jobs (``services.events.refresh_position``) when other jobs moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from vividflow.apiserver.metrics import SSE_STREAMS_OPEN
from vividflow.apiserver.services import events
from vividflow.apiserver.services.events import Announced
from vividflow.apiserver.status_cache import StatusCache
from vividflow.jobspec import JobStatus
from vividflow.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

SAFETY_POLL_SECONDS = 5.0
"""Polling of followed jobs while a notification channel is up."""
QUEUE_REFRESH_SECONDS = 5.0
"""Queue positions are looked at least this often while a followed job is queued."""
QUEUE_REFRESH_MIN_SECONDS = 1.0
"""…and at most this often, however busy the queue (each look costs a count per followed queued job)."""
HINTS_PER_STREAM = 64
"""Hints a stream may have waiting; past that it catches up from the database."""
RECONNECT_SECONDS = (0.5, 10.0)
_TERMINAL = frozenset(status.value for status in JobStatus if status.is_terminal)


class StreamClosed(Exception):
    """The stream was closed before its job ended."""


_CLOSED = Announced("", -1, "", None)


class Subscription:
    """One stream's view of its job: hints of new events, and where the stream is."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.cursor = 0
        """The sequence number of the last event the stream sent."""
        self.queued_position: int | None = None
        """The queue position of the last event sent while the job is queued (else None)."""
        self.queued = False
        self.ended = False
        """The last event sent was the job's end."""
        self.behind = False
        self.closed = False
        self._hints: asyncio.Queue[Announced] = asyncio.Queue(HINTS_PER_STREAM)

    def push(self, hint: Announced) -> None:
        if hint.seq <= self.cursor:
            return
        try:
            self._hints.put_nowait(hint)
        except asyncio.QueueFull:
            self.behind = True

    def close(self) -> None:
        """End the stream (the server is shutting down): :meth:`next` raises StreamClosed."""
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self._hints.put_nowait(_CLOSED)

    async def next(self) -> Announced:
        hint = await self._hints.get() if not self.closed else _CLOSED
        if hint is _CLOSED or self.closed:
            raise StreamClosed
        return hint

    def sent(self, seq: int, body: dict[str, Any]) -> None:
        self.cursor = seq
        self.ended = body.get("status") in _TERMINAL
        self.queued = body.get("status") == "queued"
        self.queued_position = body.get("queue_position") if self.queued else None


class EventHub:
    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        db_executor: Executor,
        status_cache: StatusCache | None = None,
    ) -> None:
        """``db_executor``: the threads the hub's (few, short) database reads run on;
        ``status_cache``: kept exact by the hints the hub gets, used while its channel is up."""
        self._settings = settings
        self._status_cache = status_cache
        self._session_factory = session_factory
        self._db_executor = db_executor
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._activity = asyncio.Event()
        self._channel = self._channel_kind(settings)
        self._redis_publisher: Any = None
        self.channel_up = False
        """Whether the notification channel (if any) is connected: for readiness and tests."""

    @staticmethod
    def _channel_kind(settings: Settings) -> str | None:
        if make_url(settings.resolved_database_url).get_backend_name() == "postgresql":
            return "postgresql"
        if settings.redis_url:
            return "redis"
        return None

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        events.add_listener(self._from_commit)
        if self._channel == "postgresql":
            self._tasks.append(asyncio.create_task(self._listen_postgresql(), name="vividflow-events-pg"))
        elif self._channel == "redis":
            import redis

            self._redis_publisher = redis.Redis.from_url(self._settings.redis_url or "")
            self._tasks.append(asyncio.create_task(self._listen_redis(), name="vividflow-events-redis"))
        self._tasks.append(asyncio.create_task(self._poll(), name="vividflow-events-poll"))

    async def stop(self) -> None:
        events.remove_listener(self._from_commit)
        self._use_status_cache(False)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._redis_publisher is not None:
            self._redis_publisher.close()
            self._redis_publisher = None

    # -- streams ----------------------------------------------------------------------------------

    def subscribe(self, job_id: str) -> Subscription:
        subscription = Subscription(job_id)
        self._subscriptions.setdefault(job_id, set()).add(subscription)
        SSE_STREAMS_OPEN.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        followers = self._subscriptions.get(subscription.job_id)
        if followers is not None and subscription in followers:
            followers.discard(subscription)
            SSE_STREAMS_OPEN.dec()
            if not followers:
                del self._subscriptions[subscription.job_id]

    @property
    def streams(self) -> int:
        return sum(len(followers) for followers in self._subscriptions.values())

    def announce(self, hint: Announced) -> None:
        """Hand a hint to the streams following its job (event loop only)."""
        self._invalidate(hint)
        self._activity.set()
        for subscription in self._subscriptions.get(hint.job_id, ()):
            subscription.push(hint)

    # -- sources ----------------------------------------------------------------------------------

    def _invalidate(self, hint: Announced) -> None:
        if self._status_cache is not None:
            changed = hint.kind not in (events.Kind.PROGRESS, events.Kind.CHANGED)
            self._status_cache.invalidate(hint.job_id, status_changed=changed)

    def _from_commit(self, announced: Announced) -> None:
        """A commit of this process (any thread): the status cache forgets the job at once, before
        the committing request answers."""
        self._invalidate(announced)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self.announce, announced)
        if self._redis_publisher is not None:
            try:
                self._redis_publisher.publish(events.NOTIFY_CHANNEL, events.encode(announced))
            except Exception as error:  # other processes fall back to polling
                log.warning("could not publish a job event to Redis: %s", error)

    async def _listen_postgresql(self) -> None:
        import psycopg

        url = make_url(self._settings.resolved_database_url).set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        await self._reconnecting(
            "PostgreSQL LISTEN", lambda: self._pg_session(psycopg.AsyncConnection, conninfo)
        )

    async def _pg_session(self, connection_class: Any, conninfo: str) -> None:
        async with await connection_class.connect(conninfo, autocommit=True) as connection:
            await connection.execute(f"LISTEN {events.NOTIFY_CHANNEL}")
            self._connected()
            async for notification in connection.notifies():
                if (hint := events.decode(notification.payload)) is not None:
                    self.announce(hint)

    async def _listen_redis(self) -> None:
        import redis.asyncio

        async def session() -> None:
            client = redis.asyncio.Redis.from_url(self._settings.redis_url or "")
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(events.NOTIFY_CHANNEL)
                self._connected()
                async for message in pubsub.listen():
                    if message.get("type") == "message" and (hint := events.decode(message["data"])):
                        self.announce(hint)
            finally:
                await client.aclose()

        await self._reconnecting("Redis pub/sub", session)

    def _connected(self) -> None:
        self.channel_up = True
        self._use_status_cache(True)
        self._activity.set()  # catch up on whatever was missed while disconnected

    def _use_status_cache(self, channel_up: bool) -> None:
        """Hints may have been missed whenever the channel connects or drops: start afresh."""
        if self._status_cache is not None:
            self._status_cache.active = channel_up and self._status_cache.ttl > 0
            self._status_cache.clear()

    async def _reconnecting(self, name: str, session: Callable[[], Awaitable[None]]) -> None:
        delay = RECONNECT_SECONDS[0]
        while True:
            started = time.monotonic()
            try:
                await session()
                error: object = "the connection ended"
            except asyncio.CancelledError:
                raise
            except Exception as failure:
                error = failure
            self.channel_up = False
            self._use_status_cache(False)
            if time.monotonic() - started > 30:
                delay = RECONNECT_SECONDS[0]
            log.warning("job event channel (%s) lost: %s; reconnecting in %.1f s", name, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_SECONDS[1])

    async def _poll(self) -> None:
        """Look at the followed jobs' sequence numbers and queue positions now and then."""
        interval = self._settings.event_poll_seconds if self._channel is None else SAFETY_POLL_SECONDS
        last_queue_refresh = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._activity.wait(), timeout=interval)
            moved = self._activity.is_set()
            self._activity.clear()
            if not self._subscriptions:
                continue
            try:
                if not moved or self._channel is None:
                    await self._poll_sequences()
                now = time.monotonic()
                since = now - last_queue_refresh
                if (moved and since >= QUEUE_REFRESH_MIN_SECONDS) or since >= QUEUE_REFRESH_SECONDS:
                    last_queue_refresh = now
                    await self._refresh_queue_positions()
                if moved:
                    await asyncio.sleep(min(interval, 0.2))  # at most a few rounds a second
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("looking for job events failed: %s", error)

    async def _poll_sequences(self) -> None:
        job_ids = list(self._subscriptions)
        latest = await self._run_db(self._read, events.event_seqs, job_ids)
        for job_id, seq in latest.items():
            for subscription in self._subscriptions.get(job_id, ()):
                if seq > subscription.cursor:
                    subscription.push(Announced(job_id, seq, "", None))

    async def _refresh_queue_positions(self) -> None:
        queued = {
            (subscription.job_id, subscription.cursor, subscription.queued_position)
            for followers in self._subscriptions.values()
            for subscription in followers
            if subscription.queued
        }
        if queued:
            await self._run_db(self._refresh, sorted(queued, key=str))

    async def _run_db(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_executor, functools.partial(function, *args))

    def _read(self, function: Callable[..., T], *args: Any) -> T:
        with self._session_factory() as session:
            return function(session, *args)

    def _refresh(self, queued: list[tuple[str, int, int | None]]) -> None:
        for job_id, seq, position in queued:  # a transaction each: never a long hold of SQLite's lock
            with self._session_factory.begin() as session:
                events.refresh_position(session, job_id, seq, position)
