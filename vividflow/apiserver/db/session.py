"""Engines and sessions for SQLite (embedded) and PostgreSQL (cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

POOL_SIZE = 40
"""Matches the worker-thread pool that runs blocking routes, so no request waits for or reopens
a connection."""


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # No pre-ping (a round trip per checkout): connections are recycled instead, and one that
        # died with a database restart fails a single request and is then replaced.
        return create_engine(url, pool_size=POOL_SIZE // 2, max_overflow=POOL_SIZE, pool_recycle=300)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=POOL_SIZE,
        max_overflow=POOL_SIZE,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the executor write while the API reads; foreign keys are off by default in SQLite."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_engine(engine: Engine) -> Engine:
    """The engine for single-statement reads on the hot paths. On PostgreSQL it runs them outside
    a transaction (no BEGIN/ROLLBACK round trips); SQLite's driver opens no transaction for a SELECT
    anyway, and switching its isolation level per checkout would only cost time."""
    if engine.dialect.name == "sqlite":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")
