"""The service fixtures hand out real, working and separate PostgreSQL and Redis databases."""

from __future__ import annotations

import psycopg
import redis
import sqlalchemy as sa

from tests.fixtures.services import psycopg_conninfo, temporary_database


def _database_exists(server_url: str, name: str) -> bool:
    with psycopg.connect(psycopg_conninfo(server_url)) as conn:
        row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row == (1,)


def test_postgres_url_round_trip_through_sqlalchemy(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE probe (value text)"))
            conn.execute(sa.text("INSERT INTO probe VALUES (:value)"), {"value": "hello"})
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT value FROM probe")).scalar_one() == "hello"
            conn.execute(sa.text("DROP TABLE probe"))
            conn.commit()
    finally:
        engine.dispose()


def test_fresh_postgres_url_is_an_empty_database_of_its_own(
    postgres_url: str, fresh_postgres_url: str
) -> None:
    assert fresh_postgres_url != postgres_url
    with psycopg.connect(psycopg_conninfo(fresh_postgres_url)) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE probe (value int)")
        conn.execute("INSERT INTO probe VALUES (1)")
        assert conn.execute("SELECT value FROM probe").fetchall() == [(1,)]


def test_temporary_database_is_dropped_afterwards(postgres_server_url: str) -> None:
    with temporary_database(postgres_server_url) as url:
        name = url.rsplit("/", 1)[1]
        assert _database_exists(postgres_server_url, name)
    assert not _database_exists(postgres_server_url, name)


def test_redis_url_round_trip(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.set("vividflow:probe", "hello", ex=60)
        assert client.get("vividflow:probe") == b"hello"
    finally:
        client.delete("vividflow:probe")
        client.close()


def test_fresh_redis_url_is_empty_and_separate(redis_url: str, fresh_redis_url: str) -> None:
    session, fresh = redis.Redis.from_url(redis_url), redis.Redis.from_url(fresh_redis_url)
    try:
        session.set("vividflow:probe", "session", ex=60)
        assert fresh.dbsize() == 0
        fresh.set("vividflow:probe", "fresh")
        assert session.get("vividflow:probe") == b"session"
        assert fresh.get("vividflow:probe") == b"fresh"
    finally:
        session.delete("vividflow:probe")
        session.close()
        fresh.close()
