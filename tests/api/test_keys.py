"""A user manages their own keys, and only theirs."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import create_api_key


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
