"""The read behind ``GET /status/{id}`` (and the web app's job page and the event stream's first
frame): a job's row and its queue position in one statement, without the ORM.

:class:`StatusReader` runs it for the status endpoint, fetching only :data:`STATUS_BODY_COLUMNS`,
without a hop to the database threads, which cost more than the read itself (the hop, and the threads
contending for the GIL with the event loop).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import namedtuple
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import ColumnElement, Engine, PoolProxiedConnection, Row, Select, bindparam, case, select
from sqlalchemy.exc import OperationalError

from vividflow.apiserver.db.models import Job
from vividflow.apiserver.db.session import RECYCLE_SECONDS, make_nowait_engine
from vividflow.apiserver.services import events
from vividflow.jobspec import JobStatus

StatusRow = tuple[Any, int | None]
"""The job's row (its columns and ``queue_position`` as attributes) and its queue position."""


def _status_query(*columns: ColumnElement[Any]) -> Select[Any]:
    ahead = events.queued_ahead()
    position = case((Job.status == JobStatus.QUEUED.value, ahead), else_=None).label("queue_position")
    return select(*columns, position).where(Job.id == bindparam("job_id"))


_STATUS_QUERY = _status_query(*Job.__table__.columns)
"""Built once: constructing the statement costs more than running it on SQLite."""

STATUS_BODY_COLUMNS = (
    "id",
    "user_id",
    "status",
    "model",
    "created_at",
    "updated_at",
    "progress",
    "result_url",
    "metrics",
    "result_expired_at",
    "error_message",
    "failure_reason",
)
"""What :meth:`JobStatusBody.of` and the ownership check read: all that :class:`StatusReader` fetches
(a job's prompt and parameters, decoded from JSON, cost more than the rest of the read)."""
_STATUS_BODY_QUERY = _status_query(*(Job.__table__.columns[name] for name in STATUS_BODY_COLUMNS))


def status_row(engine: Engine, job_id: str) -> tuple[Row[Any], int | None] | None:
    """A job's row and, while it is queued, how many queued jobs are ahead of it, in one statement
    (pass a read engine: then one round trip on PostgreSQL)."""
    with engine.connect() as connection:
        row = connection.execute(_STATUS_QUERY, {"job_id": job_id}).one_or_none()
    return None if row is None else _with_position(row)


def _with_position(row: Any) -> StatusRow:
    return row, None if row.queue_position is None else int(row.queue_position)


class _SqliteStatusStatement:
    """:func:`status_row` on one connection of a SQLite engine, held for the loop: the statement
    compiled once and run by the driver itself, each column converted by its own type's result
    processor (what SQLAlchemy would do, without its per-statement machinery, which cost four
    times the query)."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        compiled = _STATUS_BODY_QUERY.compile(dialect=dialect)
        self._sql = str(compiled)
        self._parameters = dict(compiled.params)
        self._order = list(compiled.positiontup or ())
        columns = list(_STATUS_BODY_QUERY.selected_columns)
        self._processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]
        row_type = namedtuple("StatusRow", _STATUS_BODY_QUERY.selected_columns.keys())  # type: ignore[misc]
        self._row: Callable[..., Any] = row_type
        self._engine = engine
        self._connection: PoolProxiedConnection | None = None

    def read(self, job_id: str) -> StatusRow | None:
        """Raises :class:`sqlite3.OperationalError` when the database is locked (SQLAlchemy's
        ``OperationalError`` when that happens while the connection opens)."""
        if self._connection is None:
            self._connection = self._engine.raw_connection()
        parameters = {**self._parameters, "job_id": job_id}
        cursor = self._connection.cursor()
        try:
            cursor.execute(self._sql, [parameters[name] for name in self._order])
            values = cursor.fetchone()
        finally:
            cursor.close()
        if values is None:
            return None
        converted = [
            value if convert is None else convert(value)
            for convert, value in zip(self._processors, values, strict=True)
        ]
        return _with_position(self._row(*converted))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class StatusReader:
    """:func:`status_row` from the event loop. On PostgreSQL (psycopg) over a pool of asyncio
    connections in autocommit, the statement compiled once; on SQLite on the loop itself (a read of
    one row by key, and a count over the queued jobs' index), on connections that never wait for a
    lock: a read that meets one (rare in WAL mode) goes to the database threads instead."""

    def __init__(self, engine: Engine, executor: Executor, pool_size: int) -> None:
        self._engine = engine
        self._executor = executor
        self._sqlite = make_nowait_engine(engine)
        self._sqlite_statement = None if self._sqlite is None else _SqliteStatusStatement(self._sqlite)
        self._pool: AsyncConnectionPool[Any] | None = None
        if self._sqlite is None and engine.dialect.driver == "psycopg":
            compiled = _STATUS_BODY_QUERY.compile(dialect=engine.dialect)
            self._sql, self._parameters = str(compiled), dict(compiled.params)
            conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._pool = AsyncConnectionPool(
                conninfo,
                min_size=1,
                max_size=pool_size,
                max_lifetime=RECYCLE_SECONDS,
                kwargs={"autocommit": True, "row_factory": namedtuple_row},
                open=False,
            )

    async def open(self) -> None:
        if self._pool is not None:
            await self._pool.open()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self._sqlite_statement is not None:
            self._sqlite_statement.close()
        if self._sqlite is not None:
            self._sqlite.dispose()

    async def read(self, job_id: str) -> StatusRow | None:
        if self._pool is not None:
            async with self._pool.connection() as connection:
                cursor = await connection.execute(self._sql, {**self._parameters, "job_id": job_id})
                row = await cursor.fetchone()
            return None if row is None else _with_position(row)
        if self._sqlite_statement is not None:
            try:
                return self._sqlite_statement.read(job_id)
            except (sqlite3.OperationalError, OperationalError):  # locked (now or at connect): off the loop
                pass
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, status_row, self._engine, job_id)
