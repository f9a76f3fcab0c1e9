"""Per-key rate limits with `limits`: in process and in Redis, 429 with the contract's body."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import MakeSettings, create_api_key
from vividflow.apiserver.app import create_app


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_limit_hits_429_per_key(
    make_settings: MakeSettings, storage: str, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("fresh_redis_url") if storage == "redis" else None
    # Windows of a day and a month: the sliding counter's windows are aligned to the clock, and a
    # roll-over in mid-test (every hour for an hourly limit) would shift the counts.
    settings = make_settings(rate_limits="3/day,10/month", redis_url=redis_url)
    with TestClient(create_app(settings)) as client:
        alice = {"X-API-Key": create_api_key(client, "alice@example.com")}
        bob = {"X-API-Key": create_api_key(client, "bob@example.com")}
        remaining = [
            client.get("/api/v1/usage", headers=alice).headers["X-RateLimit-Remaining"] for _ in range(3)
        ]
        assert remaining == ["2", "1", "0"]
        response = client.get("/api/v1/usage", headers=alice)
        assert response.status_code == 429
        body = response.json()
        assert body["error"] == "Rate limit exceeded" and body["details"] == ["429 Too Many Requests"]
        assert 0 < body["retry_after"] <= 86400
        assert response.headers["Retry-After"] == str(body["retry_after"])
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert int(response.headers["X-RateLimit-Reset"]) > 0
        assert client.get("/api/v1/usage", headers=bob).status_code == 200  # per key, not global
        assert client.get("/healthz").status_code == 200


def test_redis_limits_are_shared_between_servers(make_settings: MakeSettings, fresh_redis_url: str) -> None:
    settings = make_settings(rate_limits="2/day", redis_url=fresh_redis_url)
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        headers = {"X-API-Key": create_api_key(first, "alice@example.com")}
        assert first.get("/api/v1/usage", headers=headers).status_code == 200
        assert second.get("/api/v1/usage", headers=headers).status_code == 200
        assert first.get("/api/v1/usage", headers=headers).status_code == 429
        assert second.get("/api/v1/usage", headers=headers).status_code == 429


def test_default_limits_are_the_contracts(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/api/v1/usage", headers=headers)
    assert response.headers["X-RateLimit-Limit"] == "500"
    assert response.headers["X-RateLimit-Remaining"] == "499"
