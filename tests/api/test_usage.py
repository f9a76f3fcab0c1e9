"""GET /usage and daily credits: one accepted job costs one; over the limit is 429."""

from __future__ import annotations

from datetime import date, timedelta

from fastapi.testclient import TestClient

from tests.api.conftest import MakeSettings, app_state, create_api_key, submit
from vividflow.apiserver.app import create_app
from vividflow.apiserver.clock import next_reset
from vividflow.apiserver.db.models import User


def test_usage_fields(client: TestClient, headers: dict[str, str], png: bytes) -> None:
    body = client.get("/api/v1/usage", headers=headers).json()
    assert body == {
        "total_jobs": 0,
        "completed_jobs": 0,
        "failed_jobs": 0,
        "queued_jobs": 0,
        "processing_jobs": 0,
        "cancelled_jobs": 0,
        "recent_24h_jobs": 0,
        "credits_remaining": 500,
        "daily_limit": 500,
        "reset_time": next_reset().isoformat(timespec="seconds"),
    }
    first = submit(client, headers)
    submit(client, headers)
    client.post(f"/api/v1/cancel/{first}", headers=headers)
    body = client.get("/api/v1/usage", headers=headers).json()
    assert body["total_jobs"] == 2 and body["queued_jobs"] == 1 and body["cancelled_jobs"] == 1
    assert body["recent_24h_jobs"] == 2
    assert body["credits_remaining"] == 499  # the cancelled job's credit came back


def test_credits_run_out_with_429(make_settings: MakeSettings, png: bytes) -> None:
    with TestClient(create_app(make_settings(daily_limit=2))) as client:
        headers = {"X-API-Key": create_api_key(client, "dana@example.com")}
        submit(client, headers)
        submit(client, headers)
        response = client.post(
            "/api/v1/generate",
            data={"prompt": "p"},
            headers=headers,
            files={"image": ("in.png", png, "image/png")},
        )
        assert response.status_code == 429
        body = response.json()
        assert body["error"] == "Daily credit limit reached"
        assert body["details"][0].startswith("All 2 daily credits are used; they reset at ")
        assert 0 < body["retry_after"] <= 86400 and response.headers["Retry-After"] == str(
            body["retry_after"]
        )
        usage = client.get("/api/v1/usage", headers=headers).json()
        assert usage["total_jobs"] == 2 and usage["credits_remaining"] == 0

        other = {"X-API-Key": create_api_key(client, "erin@example.com")}
        assert (
            client.post(
                "/api/v1/generate",
                data={"prompt": "p"},
                headers=other,
                files={"image": ("in.png", png, "image/png")},
            ).status_code
            == 202
        )


def test_credits_reset_on_a_new_utc_day(client: TestClient, headers: dict[str, str], png: bytes) -> None:
    submit(client, headers)
    with app_state(client).session_factory.begin() as session:
        user = session.query(User).one()
        user.credits_day = date.today() - timedelta(days=1)
        user.credits_used = 500
    assert client.get("/api/v1/usage", headers=headers).json()["credits_remaining"] == 500
    submit(client, headers)
    assert client.get("/api/v1/usage", headers=headers).json()["credits_remaining"] == 499


def test_per_user_limit_override(client: TestClient, headers: dict[str, str]) -> None:
    with app_state(client).session_factory.begin() as session:
        session.query(User).one().daily_limit = 7
    body = client.get("/api/v1/usage", headers=headers).json()
    assert body["daily_limit"] == 7 and body["credits_remaining"] == 7
