"""The read behind ``GET /status/{id}`` (and the web app's job page and the event stream's first
frame): a job's row and its queue position in one statement, without the ORM.

:class:`StatusReader` runs it for the status endpoint without a hop to the database threads, which
cost more than the read itself (the hop, and the threads contending for the GIL with the event loop).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, Row, Select, bindparam, case, select
from sqlalchemy.exc import OperationalError

from vividflow.apiserver.db.models import Job
from vividflow.apiserver.db.session import RECYCLE_SECONDS, make_nowait_engine
from vividflow.apiserver.services import events
from vividflow.jobspec import JobStatus

StatusRow = tuple[Any, int | None]
"""The job's row (its columns and ``queue_position`` as attributes) and its queue position."""


def _status_query() -> Select[Any]:
    ahead = events.queued_ahead()
    position = case((Job.status == JobStatus.QUEUED.value, ahead), else_=None).label("queue_position")
    return select(Job.__table__, position).where(Job.id == bindparam("job_id"))


_STATUS_QUERY = _status_query()
"""Built once: constructing the statement costs more than running it on SQLite."""


def status_row(engine: Engine, job_id: str) -> tuple[Row[Any], int | None] | None:
    """A job's row and, while it is queued, how many queued jobs are ahead of it, in one statement
    (pass a read engine: then one round trip on PostgreSQL)."""
    with engine.connect() as connection:
        row = connection.execute(_STATUS_QUERY, {"job_id": job_id}).one_or_none()
    return None if row is None else _with_position(row)


def _with_position(row: Any) -> StatusRow:
    return row, None if row.queue_position is None else int(row.queue_position)


class StatusReader:
    """:func:`status_row` from the event loop. On PostgreSQL (psycopg) over a pool of asyncio
    connections in autocommit, the statement compiled once; on SQLite on the loop itself (a read of
    one row by key, and a count over the queued jobs' index), on connections that never wait for a
    lock: a read that meets one (rare in WAL mode) goes to the database threads instead."""

    def __init__(self, engine: Engine, executor: Executor, pool_size: int) -> None:
        self._engine = engine
        self._executor = executor
        self._sqlite = make_nowait_engine(engine)
        self._pool: AsyncConnectionPool[Any] | None = None
        if self._sqlite is None and engine.dialect.driver == "psycopg":
            compiled = _STATUS_QUERY.compile(dialect=engine.dialect)
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
        if self._sqlite is not None:
            self._sqlite.dispose()

    async def read(self, job_id: str) -> StatusRow | None:
        if self._pool is not None:
            async with self._pool.connection() as connection:
                cursor = await connection.execute(self._sql, {**self._parameters, "job_id": job_id})
                row = await cursor.fetchone()
            return None if row is None else _with_position(row)
        if self._sqlite is not None:
            try:
                return status_row(self._sqlite, job_id)
            except OperationalError:  # locked: wait for it off the loop
                pass
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, status_row, self._engine, job_id)
