"""Engines and sessions for SQLite (embedded) and PostgreSQL (cluster)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

POOL_SIZE = 40
"""Matches the worker-thread pool that runs blocking routes, so no request waits for or reopens
a connection."""
RECYCLE_SECONDS = 300
"""PostgreSQL connections are replaced after this long."""
BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite statement waits for a lock."""


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # No pre-ping (a round trip per checkout): connections are recycled instead, and one that
        # died with a database restart fails a single request and is then replaced.
        return create_engine(
            url, pool_size=POOL_SIZE // 2, max_overflow=POOL_SIZE, pool_recycle=RECYCLE_SECONDS
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return _sqlite_engine(url, BUSY_TIMEOUT_MS)


def _sqlite_engine(url: str, busy_timeout_ms: int) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        pool_size=POOL_SIZE,
        max_overflow=POOL_SIZE,
    )
    event.listen(engine, "connect", functools.partial(_sqlite_pragmas, busy_timeout_ms=busy_timeout_ms))
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, busy_timeout_ms: int) -> None:
    """WAL lets the executor write while the API reads; foreign keys are off by default in SQLite."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.close()


def make_nowait_engine(engine: Engine) -> Engine | None:
    """For SQLite: an engine on the same file whose statements never wait for a lock (they fail at
    once instead), for reads on the event loop. None for other databases (and in-memory SQLite)."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    return _sqlite_engine(engine.url.render_as_string(hide_password=False), 0)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_engine(engine: Engine) -> Engine:
    """The engine for single-statement reads on the hot paths. On PostgreSQL it runs them outside
    a transaction (no BEGIN/ROLLBACK round trips); SQLite's driver opens no transaction for a SELECT
    anyway, and switching its isolation level per checkout would only cost time."""
    if engine.dialect.name == "sqlite":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")
