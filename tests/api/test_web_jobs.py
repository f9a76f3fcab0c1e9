"""The web app's jobs over HTTP, on SQLite and PostgreSQL: a job made on the generate page is the
API's job (same checks, credits, history and status), with the page's own limit; job pages,
cancel, history and keys belong to their user only; and what users wrote is escaped."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import select

from tests.api.conftest import MakeSettings, app_state, image_bytes
from tests.api.web_client import csrf_token, post_form, signed_up
from tests.fixtures.fake_vertex import FakeVertex, enhanced_text
from tests.served_app import TIMEOUT, served_app, status_events
from vividflow.apiserver.app import create_app
from vividflow.apiserver.db.models import Job

XSS_PROMPT = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2"> & friends'


def web_generate(client: httpx.Client, image: bytes | None = None, **fields: Any) -> Any:
    """Submit the generate page's form as a browser without JavaScript would: every model's fields."""
    page = client.get("/generate")
    assert page.status_code == 200, page.text
    form = {
        "csrf_token": csrf_token(page),
        "image_source": "upload",
        "prompt": "a lighthouse in a storm",
        "model": "wan2.1",
        "width": "64",
        "height": "48",
        "length": "5",
        "steps": "2",
        "duration_seconds": "4",  # a veo3.1 field, sent along by the form: ignored for wan2.1
        "resolution": "720p",
        **fields,
    }
    upload = ("in.png", image if image is not None else image_bytes("PNG", (48, 32)), "image/png")
    return client.post("/generate", data=form, files={"image": upload}, follow_redirects=False)


def job_id_of(answer: Any) -> str:
    assert answer.status_code == 303, answer.text
    match = re.fullmatch(r"/jobs/([0-9a-f-]{36})", answer.headers["location"])
    assert match, answer.headers["location"]
    return match.group(1)


def api_key_for(client: httpx.Client, name: str = "web") -> str:
    page = post_form(client, "/account", "/account/keys", {"name": name})
    assert page.status_code == 200
    match = re.search(r'id="new-key-secret" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def test_a_web_job_is_an_api_job(client: TestClient) -> None:
    signed_up(client, "maker@example.com")
    key = api_key_for(client)
    headers = {"X-API-Key": key}
    before = client.get("/api/v1/usage", headers=headers).json()["credits_remaining"]
    job_id = job_id_of(web_generate(client, prompt="web prompt", cfg="5.5"))

    status = client.get(f"/api/v1/status/{job_id}", headers=headers)
    assert status.status_code == 200 and status.json()["status"] == "queued"
    history = client.get("/api/v1/history", headers=headers).json()
    assert [item["job_id"] for item in history["jobs"]] == [job_id]
    assert history["jobs"][0]["prompt"] == "web prompt"
    assert client.get("/api/v1/usage", headers=headers).json()["credits_remaining"] == before - 1
    with app_state(client).session_factory() as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        assert job.api_key_id is None
        assert job.parameters["wan"] == {
            "negative_prompt": "blurry, low quality, distorted",
            "cfg": 5.5,
            "width": 64,
            "height": 48,
            "length": 5,
            "steps": 2,
            "seed": 42,
        }
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "Queued" in page.text and "web prompt" in page.text


def test_the_form_is_checked_like_the_api(client: TestClient) -> None:
    signed_up(client, "checked@example.com")
    answer = web_generate(client, length="6", width="70")
    assert answer.status_code == 400
    assert (
        "length must be between 5 and 241" in answer.text and "width must be a multiple of 16" in answer.text
    )
    assert 'value="70"' in answer.text  # the form keeps what was typed
    not_an_image = web_generate(client, image=b"plain text")
    assert not_an_image.status_code == 400 and "image:" in not_an_image.text
    token = csrf_token(client.get("/generate"))
    by_url = client.post(
        "/generate",
        data={
            "csrf_token": token,
            "image_source": "url",
            "image_url": "http://10.0.0.1/a.png",
            "prompt": "x",
        },
    )
    assert by_url.status_code == 400 and "image_url" in by_url.text
    with app_state(client).session_factory() as session:
        assert session.scalars(select(Job)).all() == []


def test_web_generation_has_its_own_limit(make_settings: MakeSettings) -> None:
    settings = make_settings(web_generate_limits=["2/day"], rate_limits=["3/day"])
    with TestClient(create_app(settings)) as client:
        signed_up(client, "limited@example.com")
        job_id_of(web_generate(client))
        job_id_of(web_generate(client))
        refused = web_generate(client)
        assert refused.status_code == 429 and "at most 2/day videos" in refused.text
        key = api_key_for(client)
        for _ in range(3):  # the web submissions did not use up the API's limit
            assert client.get("/api/v1/usage", headers={"X-API-Key": key}).status_code == 200


def test_credits_run_out_on_the_web_too(make_settings: MakeSettings) -> None:
    with TestClient(create_app(make_settings(daily_limit=1))) as client:
        signed_up(client, "thrifty@example.com")
        job_id_of(web_generate(client))
        refused = web_generate(client)
        assert refused.status_code == 429 and "All 1 daily credits are used" in refused.text


def test_use_these_settings_again(client: TestClient) -> None:
    signed_up(client, "again@example.com")
    job_id = job_id_of(web_generate(client, prompt="the same again", seed="7", model="wan2.1"))
    page = client.get(f"/generate?from={job_id}")
    assert ">the same again</textarea>" in page.text
    assert re.search(r'id="param-seed" name="seed" value="7"', page.text)
    stranger = signed_up(TestClient(client.app), "stranger@example.com")
    assert "the same again" not in stranger.get(f"/generate?from={job_id}").text


def test_other_users_cannot_see_or_cancel_a_job(client: TestClient) -> None:
    signed_up(client, "owner@example.com")
    job_id = job_id_of(web_generate(client, prompt="owner's secret plan"))
    intruder = signed_up(TestClient(client.app), "intruder@example.com")
    page = intruder.get(f"/jobs/{job_id}")
    assert (
        page.status_code == 403
        and "owner&#39;s secret plan" not in page.text
        and "secret plan" not in page.text
    )
    cancel = post_form(intruder, "/generate", f"/jobs/{job_id}/cancel", {})
    assert cancel.status_code == 403
    stream = intruder.get(f"/api/v1/status/{job_id}/events")
    assert stream.status_code == 403
    assert intruder.get("/history").text.count('class="card"') == 0
    assert client.get(f"/api/v1/status/{job_id}", headers={"X-API-Key": api_key_for(client)}).json()[
        "status"
    ] == ("queued")
    assert intruder.get("/jobs/00000000-0000-0000-0000-000000000000").status_code == 404


def test_cancel_from_the_job_page(client: TestClient) -> None:
    signed_up(client, "cancel@example.com")
    job_id = job_id_of(web_generate(client))
    answer = post_form(client, f"/jobs/{job_id}", f"/jobs/{job_id}/cancel", {})
    assert answer.status_code == 303 and answer.headers["location"] == f"/jobs/{job_id}"
    assert "Cancelled" in client.get(f"/jobs/{job_id}").text
    again = post_form(client, f"/jobs/{job_id}", f"/jobs/{job_id}/cancel", {})
    assert again.status_code == 409 and "can no longer be cancelled" in again.text


def test_stopping_a_running_job_asks_first(client: TestClient) -> None:
    signed_up(client, "stop@example.com")
    job_id = job_id_of(web_generate(client))
    with app_state(client).session_factory.begin() as session:
        session.scalars(select(Job).where(Job.id == job_id)).one().status = "processing"
    asked = post_form(client, f"/jobs/{job_id}", f"/jobs/{job_id}/cancel", {"running": "true"})
    assert asked.status_code == 200 and "Stop this job?" in asked.text
    assert "Processing" in client.get(f"/jobs/{job_id}").text
    stopped = post_form(
        client, f"/jobs/{job_id}", f"/jobs/{job_id}/cancel", {"running": "true", "confirm": "yes"}
    )
    assert stopped.status_code == 303
    assert "Cancelled" in client.get(f"/jobs/{job_id}").text


def test_history_filters_and_pages(client: TestClient) -> None:
    signed_up(client, "gallery@example.com")
    ids = [job_id_of(web_generate(client, prompt=f"scene {number}")) for number in range(14)]
    post_form(client, f"/jobs/{ids[0]}", f"/jobs/{ids[0]}/cancel", {})
    first = client.get("/history")
    assert first.text.count('class="card"') == 12 and "scene 13" in first.text and "Page 1 of 2" in first.text
    second = client.get("/history?page=2")
    assert second.text.count('class="card"') == 2 and "scene 0" in second.text
    cancelled = client.get("/history?status=cancelled")
    assert cancelled.text.count('class="card"') == 1 and "scene 0" in cancelled.text
    assert client.get("/history?status=bogus").text.count('class="card"') == 12


def test_keys_from_the_account_page(client: TestClient) -> None:
    signed_up(client, "keys@example.com")
    key = api_key_for(client, "laptop")
    assert client.get("/api/v1/usage", headers={"X-API-Key": key}).status_code == 200
    account = client.get("/account")
    assert "laptop" in account.text and key[:10] in account.text and key not in account.text
    key_id = re.search(r'data-key-id="([^"]+)"', account.text)
    assert key_id
    asked = post_form(client, "/account", f"/account/keys/{key_id.group(1)}/revoke", {})
    assert asked.status_code == 200 and "Revoke the key" in asked.text
    assert client.get("/api/v1/usage", headers={"X-API-Key": key}).status_code == 200
    revoked = post_form(client, "/account", f"/account/keys/{key_id.group(1)}/revoke", {"confirm": "yes"})
    assert revoked.status_code == 303
    assert client.get("/api/v1/usage", headers={"X-API-Key": key}).status_code == 401
    listed = client.get("/account").text
    assert '<span class="badge">revoked</span>' in listed
    assert f"/account/keys/{key_id.group(1)}/revoke" not in listed
    bad_name = post_form(client, "/account", "/account/keys", {"name": "a<b>"})
    assert bad_name.status_code == 400 and "must not contain &lt; or &gt;" in bad_name.text
    other = signed_up(TestClient(client.app), "other-keys@example.com")
    assert post_form(
        other, "/account", f"/account/keys/{key_id.group(1)}/revoke", {"confirm": "yes"}
    ).status_code == (403)


def test_webhook_secret_is_shown_and_rotated_on_request(client: TestClient) -> None:
    signed_up(client, "hooks@example.com")
    assert "whsec_" not in client.get("/account").text
    shown = post_form(client, "/account", "/account/webhook-secret", {"action": "show"})
    secret = re.search(r'id="webhook-secret" value="(whsec_[^"]+)"', shown.text)
    assert secret and shown.headers["cache-control"] == "no-store"
    rotated = post_form(client, "/account", "/account/webhook-secret", {"action": "rotate"})
    new = re.search(r'id="webhook-secret" value="(whsec_[^"]+)"', rotated.text)
    assert new and new.group(1) != secret.group(1)
    key = api_key_for(client)
    assert client.get("/api/v1/webhooks/secret", headers={"X-API-Key": key}).json()["secret"] == new.group(1)


def test_what_users_wrote_is_escaped(client: TestClient) -> None:
    signed_up(client, "xss@example.com")
    job_id = job_id_of(web_generate(client, prompt=XSS_PROMPT))
    name = 'a" autofocus onfocus="window.__xss=3 & co'
    post_form(client, "/account", "/account/keys", {"name": name})
    for page in (client.get(f"/jobs/{job_id}"), client.get("/history"), client.get("/account")):
        assert "<script>window.__xss" not in page.text and "<img src=x onerror" not in page.text
        assert 'onfocus="window' not in page.text
    assert str(escape(XSS_PROMPT)) in client.get(f"/jobs/{job_id}").text
    assert str(escape(name)) in client.get("/account").text


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:
    for path in ("/login", "/register"):
        page = client.get(path)
        policy = page.headers["content-security-policy"]
        assert (
            "script-src 'self'" in policy
            and "frame-ancestors 'none'" in policy
            and "unsafe-inline" not in policy
        )
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    static = client.get("/static/app.css")
    assert static.status_code == 200 and "max-age" in static.headers["cache-control"]
    assert client.get("/static/vendor/pico.min.css").status_code == 200


def test_the_status_stream_takes_the_session(make_settings: MakeSettings) -> None:
    with (
        served_app(create_app(make_settings())) as url,
        httpx.Client(base_url=url, timeout=TIMEOUT) as client,
    ):
        signed_up(client, "stream@example.com")
        job_id = job_id_of(web_generate(client))
        with client.stream("GET", f"/api/v1/status/{job_id}/events") as response:
            assert response.status_code == 200
            first = next(status_events(response))
        assert first.data is not None and first.data["status"] == "queued" and first.data["job_id"] == job_id
        stranger = signed_up(httpx.Client(base_url=url), "peeker@example.com")
        assert stranger.get(f"/api/v1/status/{job_id}/events").status_code == 403


@pytest.fixture
def enhancing_client(make_settings: MakeSettings, fake_vertex: FakeVertex) -> Any:
    fake_vertex.set_scenario()
    with TestClient(create_app(make_settings(**fake_vertex.settings_overrides()))) as client:
        yield client


def test_the_page_enhances_prompts_with_its_session(enhancing_client: TestClient) -> None:
    client = signed_up(enhancing_client, "muse@example.com")
    page = client.get("/generate")
    assert 'id="enhance"' in page.text
    token = csrf_token(page)
    body = {"prompt": "a cat", "model": "wan2.1"}
    answer = client.post("/api/v1/enhance-prompt", json=body, headers={"X-CSRF-Token": token})
    assert answer.status_code == 200 and answer.json()["prompt"] == enhanced_text("a cat")
    assert client.post("/api/v1/enhance-prompt", json=body).status_code == 403
    cross = client.post(
        "/api/v1/enhance-prompt", json=body, headers={"X-CSRF-Token": token, "Origin": "https://evil.example"}
    )
    assert cross.status_code == 403


def test_the_enhance_button_is_hidden_without_google_credentials(client: TestClient) -> None:
    signed_up(client, "plain@example.com")
    assert 'id="enhance"' not in client.get("/generate").text
