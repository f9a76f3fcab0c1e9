"""What the application holds for its lifetime, built once from the settings."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from vividflow.apiserver.auth import Authenticator
from vividflow.apiserver.backends.base import JobBackend
from vividflow.apiserver.db.session import make_engine, make_read_engine, make_session_factory
from vividflow.apiserver.event_hub import EventHub
from vividflow.apiserver.ratelimit import RateLimiter
from vividflow.apiserver.services import web_sessions
from vividflow.apiserver.services.job_status import StatusReader
from vividflow.apiserver.sessions import SessionKeys
from vividflow.apiserver.slots import UserSlots
from vividflow.apiserver.status_cache import StatusCache
from vividflow.settings import Settings

STATUS_CONNECTIONS = 10
"""PostgreSQL connections of one API process for status reads (they are short: a few suffice)."""

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    read_engine: Engine
    """``engine`` for single-statement reads outside a transaction (see make_read_engine)."""
    session_factory: sessionmaker[Session]
    status_reader: StatusReader
    status_cache: StatusCache
    """Status reads from the event loop, for ``GET /status`` (opened and closed by the app's lifespan)."""
    limiter: RateLimiter
    authenticator: Authenticator
    backend: JobBackend
    db_executor: ThreadPoolExecutor
    """A few threads for the hot paths' database work: fewer threads contending for the GIL
    answer faster than the general worker pool, and slow network calls never queue here."""
    io_executor: ThreadPoolExecutor
    """Threads for blocking network calls (GCS, the Kubernetes API) and image decoding, so that a slow
    bucket or API server cannot hold up database work or the framework's pool of plain routes."""
    fetch_slots: UserSlots
    """Image URL downloads running per user."""
    stream_slots: UserSlots
    """Status streams open per user."""
    event_hub: EventHub
    session_keys: SessionKeys
    """Signs web session cookies and derives CSRF tokens."""

    async def run_db(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db_executor, functools.partial(function, *args, **kwargs))

    async def run_io(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.io_executor, functools.partial(function, *args, **kwargs))

    async def tell_backend(self, call: Callable[[str], None], job_id: str) -> None:
        """``backend.submitted`` or ``backend.cancelled``: on the I/O pool when it goes over the network."""
        if self.backend.network_calls:
            await self.run_io(call, job_id)
        else:
            call(job_id)

    def close(self) -> None:
        self.db_executor.shutdown(wait=True)
        self.io_executor.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        engine = make_engine(settings.resolved_database_url)
        session_factory = make_session_factory(engine)
        db_executor = ThreadPoolExecutor(settings.db_threads, thread_name_prefix="vividflow-db")
        if settings.session_secret is not None:
            session_secret = settings.session_secret.get_secret_value()
        else:
            with session_factory.begin() as session:
                session_secret = web_sessions.server_secret(session, web_sessions.SESSION_SIGNING_SECRET)
        read_engine = make_read_engine(engine)
        status_cache = StatusCache(settings.status_cache_seconds)
        return cls(
            settings=settings,
            engine=engine,
            read_engine=read_engine,
            session_factory=session_factory,
            status_reader=StatusReader(read_engine, db_executor, STATUS_CONNECTIONS),
            status_cache=status_cache,
            limiter=RateLimiter(
                settings.rate_limits,
                settings.redis_url,
                key_limits=settings.key_rate_limits,
                auth_failure_limits=settings.auth_failure_limits,
            ),
            authenticator=Authenticator(session_factory, settings.auth_cache_seconds),
            backend=make_backend(settings, session_factory),
            db_executor=db_executor,
            io_executor=ThreadPoolExecutor(settings.io_threads, thread_name_prefix="vividflow-io"),
            fetch_slots=UserSlots(
                settings.max_url_fetches_per_user,
                "Too many image downloads",
                "At most {limit} image_url downloads may run at once; wait for one to finish.",
            ),
            stream_slots=UserSlots(
                settings.max_streams_per_user,
                "Too many status streams",
                "At most {limit} status streams may be open at once; close one first.",
            ),
            event_hub=EventHub(settings, session_factory, db_executor, status_cache),
            session_keys=SessionKeys(session_secret, settings),
        )


def make_backend(settings: Settings, session_factory: sessionmaker[Session]) -> JobBackend:
    if settings.backend == "kubernetes":
        from vividflow.apiserver.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(settings, session_factory)
    from vividflow.apiserver.backends.local import LocalBackend

    return LocalBackend(settings, session_factory)
