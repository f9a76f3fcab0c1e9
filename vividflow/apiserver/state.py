"""What the application holds for its lifetime, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from vividflow.apiserver.backends.base import JobBackend
from vividflow.apiserver.db.session import make_engine, make_session_factory
from vividflow.apiserver.ratelimit import KeyRateLimiter
from vividflow.settings import Settings


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    limiter: KeyRateLimiter
    backend: JobBackend

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        engine = make_engine(settings.resolved_database_url)
        session_factory = make_session_factory(engine)
        return cls(
            settings=settings,
            engine=engine,
            session_factory=session_factory,
            limiter=KeyRateLimiter(settings.rate_limits, settings.redis_url),
            backend=make_backend(settings, session_factory),
        )


def make_backend(settings: Settings, session_factory: sessionmaker[Session]) -> JobBackend:
    if settings.backend == "kubernetes":
        raise NotImplementedError("the kubernetes backend arrives with the cluster-mode work")
    from vividflow.apiserver.backends.local import LocalBackend

    return LocalBackend(settings, session_factory)
