"""Every /api/v1 call needs a valid key; keys are stored only as digests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from tests.api.conftest import MakeSettings, app_state, create_api_key
from vividflow.apiserver.app import create_app
from vividflow.apiserver.db.models import ApiKey
from vividflow.apiserver.services.keys import Principal

PROTECTED = [
    ("GET", "/api/v1/status/00000000-0000-0000-0000-000000000000"),
    ("POST", "/api/v1/cancel/00000000-0000-0000-0000-000000000000"),
    ("GET", "/api/v1/history"),
    ("GET", "/api/v1/usage"),
    ("GET", "/api/v1/keys"),
    ("POST", "/api/v1/generate"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_missing_key_is_401_with_error_body(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "Invalid or missing API key"
    assert body["details"] == ["Send your API key in the X-API-Key header."]


def test_unknown_key_is_401(client: TestClient) -> None:
    response = client.get("/api/v1/usage", headers={"X-API-Key": "vf_not-a-real-key"})
    assert response.status_code == 401
    assert response.json()["details"] == ["The API key is not valid or has been revoked."]


def test_revoked_key_is_401(client: TestClient, headers: dict[str, str]) -> None:
    key_id = client.get("/api/v1/keys", headers=headers).json()["keys"][0]["id"]
    assert client.delete(f"/api/v1/keys/{key_id}", headers=headers).status_code == 200
    assert client.get("/api/v1/usage", headers=headers).status_code == 401


def test_keys_are_stored_hashed(client: TestClient) -> None:
    secret = create_api_key(client, "bob@example.com")
    with app_state(client).session_factory() as session:
        stored = session.scalars(select(ApiKey)).all()
    assert len(stored) == 1
    assert secret not in {stored[0].key_hash, stored[0].prefix}
    assert len(stored[0].key_hash) == 64 and secret.startswith(stored[0].prefix)


def test_health_probes_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "rate_limit_storage": True, "backend": True}


def test_failed_authentications_are_limited_per_client_address(make_settings: MakeSettings) -> None:
    """Past the limit, every key from that address is refused (a right guess included) until the
    window frees; other addresses are not affected."""
    app = create_app(make_settings(auth_failure_limits="5/day", auth_cache_seconds=0))
    with TestClient(app, client=("203.0.113.7", 50000)) as attacker:
        valid = {"X-API-Key": create_api_key(attacker, "alice@example.com")}
        for n in range(5):
            assert attacker.get("/api/v1/usage", headers={"X-API-Key": f"vf_guess{n}"}).status_code == 401
        for headers in ({"X-API-Key": "vf_guess6"}, valid):
            refused = attacker.get("/api/v1/usage", headers=headers)
            assert refused.status_code == 429
            body = refused.json()
            assert body["error"] == "Too many failed authentications" and body["retry_after"] > 0
            assert refused.headers["Retry-After"] == str(body["retry_after"])
        with TestClient(app, client=("198.51.100.2", 50000)) as someone_else:
            assert someone_else.get("/api/v1/usage", headers=valid).status_code == 200


def test_last_used_is_recorded_without_a_write_per_request(make_settings: MakeSettings) -> None:
    with TestClient(create_app(make_settings(auth_cache_seconds=0))) as client:
        headers = {"X-API-Key": create_api_key(client, "alice@example.com")}
        writes: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
                writes.append(statement)

        engine = app_state(client).engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            for _ in range(20):  # each looked up in the database (no auth cache here)
                assert client.get("/api/v1/usage", headers=headers).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert len(writes) == 1
        (key,) = client.get("/api/v1/keys", headers=headers).json()["keys"]
        assert key["last_used_at"] is not None and len(key["last_used_at"]) == 19


def test_requests_that_miss_the_cache_together_share_one_lookup(make_settings: MakeSettings) -> None:
    with TestClient(create_app(make_settings(auth_cache_seconds=0))) as client:
        key = create_api_key(client, "alice@example.com")
        authenticator = app_state(client).authenticator
        lookups: list[str] = []

        async def run_db(function: Callable[[str], Principal | None], digest: str) -> Principal | None:
            lookups.append(digest)
            return await asyncio.to_thread(function, digest)

        async def burst(secret: str, callers: int, cancel_one: bool = False) -> list[Principal | None]:
            tasks = [asyncio.ensure_future(authenticator.resolve(secret, run_db)) for _ in range(callers)]
            if cancel_one:
                await asyncio.sleep(0)  # all of them waiting on the one lookup
                tasks[0].cancel()
                tasks = tasks[1:]
            return list(await asyncio.gather(*tasks))

        principals = asyncio.run(burst(key, 20, cancel_one=True))
        assert len(lookups) == 1 and len(principals) == 19
        assert all(p is not None and p == principals[0] for p in principals)
        assert asyncio.run(burst("vf_not-a-key", 5)) == [None] * 5 and len(lookups) == 2
        asyncio.run(burst(key, 1))  # the finished lookup is not reused: a later miss asks again
        assert len(lookups) == 3
