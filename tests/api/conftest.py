"""The API under test: the real app over HTTP (httpx through Starlette's TestClient), on SQLite and
on PostgreSQL, with rate limits in process or in Redis."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, text

from vividflow.apiserver.app import create_app
from vividflow.apiserver.db.migrate import upgrade
from vividflow.apiserver.db.models import Base
from vividflow.apiserver.services import keys
from vividflow.apiserver.state import AppState
from vividflow.settings import Settings

MakeSettings = Callable[..., Settings]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once keeps the suite fast)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


def truncate_postgres(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "vividflow.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("migrated_postgres_url")
    truncate_postgres(url)
    return url


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> MakeSettings:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "workers": 0,
            "migrate_on_start": False,
            "public_url": "http://testserver",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def app_state(client: TestClient) -> AppState:
    state: AppState = client.app.state.vivid  # type: ignore[attr-defined]
    return state


def create_api_key(client: TestClient, email: str, name: str = "test") -> str:
    with app_state(client).session_factory.begin() as session:
        return keys.create_key(session, keys.get_or_create_user(session, email), name).secret


@pytest.fixture
def api_key(client: TestClient) -> str:
    return create_api_key(client, "alice@example.com")


@pytest.fixture
def headers(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key}


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def png() -> bytes:
    return image_bytes()


TERMINAL = {"completed", "failed", "cancelled"}


def submit(client: TestClient, headers: dict[str, str], image: bytes | None = None, **fields: Any) -> str:
    """POST /generate as a multipart form (a small PNG unless ``image``); the accepted job's id."""
    data = {"prompt": "a lighthouse in a storm", **{k: str(v) for k, v in fields.items()}}
    upload = ("in.png", image if image is not None else image_bytes("PNG", (48, 32)), "image/png")
    response = client.post("/api/v1/generate", data=data, headers=headers, files={"image": upload})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def wait_status(
    client: TestClient,
    headers: dict[str, str],
    job_id: str,
    until: set[str] | None = None,
    timeout: float = 120.0,
    check: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Poll GET /status until its status is in ``until`` (default: terminal) and ``check(body)``."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/v1/status/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in (until or TERMINAL) and (check is None or check(body)):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {body} after {timeout} s")
        time.sleep(0.05)
