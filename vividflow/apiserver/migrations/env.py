"""Alembic environment: the URL and metadata come from Vivid Flow, not from an ini file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from vividflow.apiserver.db.models import Base
from vividflow.apiserver.db.session import make_engine

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as fresh:
        _run(fresh)
    engine.dispose()
