"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL, and the
newest one can be rolled back and applied again."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from vividflow.apiserver.db.migrate import alembic_config, upgrade
from vividflow.apiserver.db.models import Base


def _differences(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_models(database_url: str) -> None:
    upgrade(database_url)
    assert _differences(database_url) == []


def test_web_accounts_migration_adds_its_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        inspector = inspect(engine)
        assert {"web_sessions", "server_secrets"} <= set(inspector.get_table_names())
        columns = {column["name"] for column in inspector.get_columns("users")}
        assert {"password_hash", "password_changed_at"} <= columns
    finally:
        engine.dispose()


def test_the_web_accounts_migration_rolls_back_and_forward(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "0003")
    engine = create_engine(database_url)
    try:
        assert "web_sessions" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    upgrade(database_url)
    assert _differences(database_url) == []
