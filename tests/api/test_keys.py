"""A user manages their own keys, and only theirs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.api.conftest import MakeSettings, app_state, create_api_key
from vividflow.apiserver.app import create_app
from vividflow.apiserver.db.models import User
from vividflow.apiserver.services import keys


def test_create_list_and_revoke(client: TestClient, headers: dict[str, str]) -> None:
    created = client.post("/api/v1/keys", json={"name": "laptop"}, headers=headers)
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "laptop" and body["key"].startswith(body["prefix"]) and not body["revoked"]

    new_headers = {"X-API-Key": body["key"]}
    assert client.get("/api/v1/usage", headers=new_headers).status_code == 200

    listed = client.get("/api/v1/keys", headers=headers).json()
    assert listed["count"] == 2
    assert all("key" not in item for item in listed["keys"])
    assert {item["name"] for item in listed["keys"]} == {"test", "laptop"}

    revoked = client.delete(f"/api/v1/keys/{body['id']}", headers=headers)
    assert revoked.json() == {"message": "API key revoked", "id": body["id"]}
    assert client.get("/api/v1/usage", headers=new_headers).status_code == 401
    assert [k["revoked"] for k in client.get("/api/v1/keys", headers=headers).json()["keys"]] == [False, True]


def test_create_without_body_uses_default_name(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/api/v1/keys", headers=headers)
    assert response.status_code == 201 and response.json()["name"] == "default"


def test_bad_key_name_is_400(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/api/v1/keys", json={"name": ""}, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid parameters"
    assert response.json()["details"] == ["name must not be empty"]


def test_other_users_keys_are_invisible_and_protected(client: TestClient, headers: dict[str, str]) -> None:
    bob = {"X-API-Key": create_api_key(client, "bob@example.com", "bobs")}
    bob_key_id = client.get("/api/v1/keys", headers=bob).json()["keys"][0]["id"]
    assert [k["name"] for k in client.get("/api/v1/keys", headers=headers).json()["keys"]] == ["test"]
    response = client.delete(f"/api/v1/keys/{bob_key_id}", headers=headers)
    assert response.status_code == 403
    assert response.json() == {"error": "Access denied", "details": ["This API key belongs to another user."]}
    assert client.get("/api/v1/usage", headers=bob).status_code == 200
    assert client.delete("/api/v1/keys/nope", headers=headers).status_code == 404


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("laptop\r\nX-Injected: 1", "name must not contain control characters (such as line breaks or NUL)"),
        ("nul\x00byte", "name must not contain control characters (such as line breaks or NUL)"),
        ("tab\tname", "name must not contain control characters (such as line breaks or NUL)"),
        ("<script>alert(1)</script>", "name must not contain < or >"),
        ("x" * 101, "name: String should have at most 100 characters"),
        ("   ", "name must not be empty"),
    ],
)
def test_key_names_are_printable_text(
    client: TestClient, headers: dict[str, str], name: str, problem: str
) -> None:
    response = client.post("/api/v1/keys", json={"name": name}, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "Invalid parameters", "details": [problem]}
    assert client.get("/api/v1/keys", headers=headers).json()["count"] == 1


def test_a_user_has_at_most_the_configured_number_of_active_keys(make_settings: MakeSettings) -> None:
    with TestClient(create_app(make_settings(max_keys_per_user=3))) as client:
        headers = {"X-API-Key": create_api_key(client, "alice@example.com")}
        created = [client.post("/api/v1/keys", headers=headers) for _ in range(2)]
        assert [response.status_code for response in created] == [201, 201]
        refused = client.post("/api/v1/keys", json={"name": "fourth"}, headers=headers)
        assert refused.status_code == 409
        assert refused.json() == {
            "error": "Too many API keys",
            "details": ["You have 3 active API keys, the most allowed; revoke one to create another."],
        }
        assert client.delete(f"/api/v1/keys/{created[0].json()['id']}", headers=headers).status_code == 200
        assert client.post("/api/v1/keys", headers=headers).status_code == 201  # revoked keys do not count


def test_concurrent_key_creations_cannot_pass_the_limit(client: TestClient, headers: dict[str, str]) -> None:
    factory = app_state(client).session_factory
    with factory() as session:
        user = session.scalars(select(User)).one()
    barrier = threading.Barrier(8)

    def create() -> bool:
        barrier.wait()
        try:
            with factory.begin() as session:
                keys.create_key(session, session.get_one(User, user.id), "racer", max_keys=5)
        except keys.TooManyKeys:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: create(), range(8)))
    assert results.count(True) == 4  # the test key plus four: five
    assert client.get("/api/v1/keys", headers=headers).json()["count"] == 5
