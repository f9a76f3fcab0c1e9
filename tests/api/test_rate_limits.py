"""Per-key rate limits with `limits`: in process and in Redis, 429 with the contract's body."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import MakeSettings, create_api_key
from vividflow.apiserver.app import create_app
from vividflow.apiserver.ratelimit import RateLimiter
from vividflow.apiserver.services.keys import Principal


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


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_limits_hold_per_user_across_all_their_keys(
    make_settings: MakeSettings, storage: str, request: pytest.FixtureRequest
) -> None:
    """More keys buy no more requests."""
    redis_url = request.getfixturevalue("fresh_redis_url") if storage == "redis" else None
    with TestClient(create_app(make_settings(rate_limits="5/day", redis_url=redis_url))) as client:
        first = {"X-API-Key": create_api_key(client, "alice@example.com")}
        more = [{"X-API-Key": client.post("/api/v1/keys", headers=first).json()["key"]} for _ in range(2)]
        remaining = [client.get("/api/v1/usage", headers=headers) for headers in (*more, first)]
        assert [r.headers["X-RateLimit-Remaining"] for r in remaining] == ["2", "1", "0"]
        for headers in (first, *more):
            assert client.get("/api/v1/usage", headers=headers).status_code == 429
        other = {"X-API-Key": create_api_key(client, "bob@example.com")}
        assert client.get("/api/v1/usage", headers=other).status_code == 200


def test_a_tighter_per_key_limit_shows_in_the_headers(make_settings: MakeSettings) -> None:
    settings = make_settings(rate_limits="10/day", key_rate_limits="2/day")
    with TestClient(create_app(settings)) as client:
        first = {"X-API-Key": create_api_key(client, "alice@example.com")}
        response = client.get("/api/v1/usage", headers=first)
        assert (response.headers["X-RateLimit-Limit"], response.headers["X-RateLimit-Remaining"]) == (
            "2",
            "1",
        )
        assert client.get("/api/v1/usage", headers=first).status_code == 200
        refused = client.get("/api/v1/usage", headers=first)
        assert refused.status_code == 429 and refused.headers["X-RateLimit-Limit"] == "2"
        # Another key of the same user has its own 2, within the user's 10.
        second = {"X-API-Key": create_api_key(client, "alice@example.com", "second")}
        response = client.get("/api/v1/usage", headers=second)
        assert response.status_code == 200 and response.headers["X-RateLimit-Remaining"] == "1"


def test_more_requests_in_flight_than_redis_connections_wait_instead_of_failing(fresh_redis_url: str) -> None:
    """Past its pool, a request waits for a Redis connection: no MaxConnectionsError (a 500)."""
    limiter = RateLimiter(["100000/hour"], fresh_redis_url, redis_connections=2)

    async def burst() -> list[bool]:
        principals = [
            Principal(user_id=f"user-{n % 5}", key_id=f"key-{n}", email="x@example.com") for n in range(60)
        ]
        states = await asyncio.gather(*(limiter.hit(principal) for principal in principals))
        return [state.allowed for state in states]

    assert asyncio.run(burst()) == [True] * 60
