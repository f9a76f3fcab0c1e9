"""Webhooks per the Standard Webhooks specification, against a real HTTPS receiver that verifies every
delivery with the ``standardwebhooks`` package; on SQLite and PostgreSQL.

Job changes are driven through services.jobs on the app's database (an embedded executor's calls),
or through the API (cancel); the app's own sender delivers them.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.api.conftest import MakeSettings, app_state, create_api_key, image_bytes, submit
from tests.fixtures.https_server import HttpsServer
from tests.fixtures.webhook_receiver import Reply, WebhookReceiver, webhook_receiver
from tests.serve import create_key, running_server, settings_env
from tests.served_app import new_key, serving
from tests.served_app import submit as submit_over_http
from vividflow.apiserver.app import create_app
from vividflow.apiserver.db.models import Job, User, WebhookDelivery
from vividflow.apiserver.db.session import make_engine, make_session_factory
from vividflow.apiserver.services import jobs, leases
from vividflow.apiserver.services.webhooks import PROGRESS_INTERVAL_SECONDS
from vividflow.apiserver.webhook_sender import USER_AGENT, retry_after_seconds
from vividflow.jobspec import JobMetrics, RunResult

EXECUTOR = "test-executor"
FAST: dict[str, Any] = {"webhook_timeout_seconds": 1.0, "webhook_retry_seconds": [0.2, 0.2, 0.2]}
Factory = sessionmaker[Session]
Listing = list[dict[str, Any]]


@pytest.fixture(scope="session")
def receiver_server(
    tmp_path_factory: pytest.TempPathFactory, https_server: HttpsServer
) -> Iterator[WebhookReceiver]:
    """One receiver for the session; its CA bundle also trusts the image server."""
    with webhook_receiver(tmp_path_factory.mktemp("webhooks"), https_server.ca_bundle_path) as receiver:
        yield receiver


@pytest.fixture
def receiver(receiver_server: WebhookReceiver) -> Iterator[WebhookReceiver]:
    receiver_server.reset()
    yield receiver_server
    receiver_server.reset()


def hooked_app(make_settings: MakeSettings, receiver: WebhookReceiver, **overrides: Any) -> TestClient:
    """An app (no workers) whose sender may reach the receiver."""
    return TestClient(create_app(make_settings(**{**receiver.settings_overrides(), **FAST, **overrides})))


@pytest.fixture
def client(make_settings: MakeSettings, receiver: WebhookReceiver) -> Iterator[TestClient]:
    with hooked_app(make_settings, receiver) as test_client:
        yield test_client


def secret_of(client: TestClient, headers: dict[str, str]) -> str:
    response = client.get("/api/v1/webhooks/secret", headers=headers)
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


def factory(client: TestClient) -> Factory:
    return app_state(client).session_factory


def start(client: TestClient, job_id: str) -> None:
    with factory(client).begin() as session:
        claimed = leases.claim_next_queued(session, EXECUTOR, lease_seconds=300)
        assert claimed is not None and claimed.id == job_id


def progress(client: TestClient, job_id: str, value: int) -> None:
    with factory(client).begin() as session:
        assert jobs.record_progress(session, job_id, value, owner=EXECUTOR)


def complete(client: TestClient, job_id: str) -> None:
    metrics = JobMetrics(spin_up_time=1.0, generation_time=2.0, total_time=3.0)
    result = RunResult.success(
        result_url=f"http://testserver/files/results/{job_id}.mp4", output_uri="/x.mp4", metrics=metrics
    )
    with factory(client).begin() as session:
        assert jobs.record_result(session, job_id, result, EXECUTOR)


def cancel(client: TestClient, headers: dict[str, str], job_id: str) -> None:
    assert client.post(f"/api/v1/cancel/{job_id}", headers=headers).status_code == 200


def listing(client: TestClient, headers: dict[str, str], job_id: str) -> Listing:
    response = client.get(f"/api/v1/jobs/{job_id}/webhooks", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["job_id"] == job_id and body["count"] == len(body["deliveries"])
    deliveries: Listing = body["deliveries"]
    return deliveries


def wait_listing(
    client: TestClient,
    headers: dict[str, str],
    job_id: str,
    check: Callable[[Listing], bool],
    timeout: float = 15.0,
) -> Listing:
    """The job's deliveries once ``check`` holds for them."""
    deadline = time.monotonic() + timeout
    while not check(found := listing(client, headers, job_id)):
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries still {found} after {timeout} s")
        time.sleep(0.02)
    return found


def states(*expected: str) -> Callable[[Listing], bool]:
    return lambda found: [d["state"] for d in found] == list(expected)


def last_errors(session_factory: Factory, job_id: str) -> list[str | None]:
    with session_factory() as session:
        query = select(WebhookDelivery.last_error).where(WebhookDelivery.job_id == job_id)
        return list(session.scalars(query.order_by(WebhookDelivery.id)))


def test_a_finished_job_is_delivered_signed_and_listed_for_its_owner(
    client: TestClient, receiver: WebhookReceiver, headers: dict[str, str]
) -> None:
    secret = secret_of(client, headers)
    receiver.trust(secret)
    response = client.post(
        "/api/v1/generate",
        headers=headers,
        data={"prompt": "a lighthouse", "webhook_url": receiver.url("done")},
        files={"image": ("in.png", image_bytes(), "image/png")},
    )
    assert response.status_code == 202, response.text
    assert set(response.json()) == {"message", "job_id", "status", "estimated_wait_time"}
    job_id = response.json()["job_id"]
    start(client, job_id)
    progress(client, job_id, 50)
    assert listing(client, headers, job_id) == []  # only "completed" was asked for
    complete(client, job_id)

    (delivery,) = receiver.wait_for(1, "done")
    assert delivery.verified_by == {secret}
    assert delivery.payload() == client.get(f"/api/v1/status/{job_id}", headers=headers).json()
    assert delivery.payload()["status"] == "completed"
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["user-agent"] == USER_AGENT
    assert abs(delivery.timestamp - delivery.received_at) < 2
    assert [s[:3] for s in delivery.signatures] == ["v1,"]
    (listed,) = wait_listing(client, headers, job_id, states("delivered"))
    assert listed["webhook_id"] == delivery.message_id and listed["event"] == "completed"
    assert (listed["attempts"], listed["last_status_code"], listed["next_attempt_at"]) == (1, 204, None)
    assert listed["delivered_at"] and listed["created_at"] and listed["last_error"] is None

    # Only its owner sees the deliveries, as with /status; no secret in them.
    bob = {"X-API-Key": create_api_key(client, "bob@example.com")}
    other = client.get(f"/api/v1/jobs/{job_id}/webhooks", headers=bob)
    assert other.status_code == 403 and other.json()["error"] == "Access denied"
    missing = client.get("/api/v1/jobs/no-such-job/webhooks", headers=headers)
    assert missing.status_code == 404 and missing.json()["details"] == ["No job with id no-such-job."]
    assert client.get(f"/api/v1/jobs/{job_id}/webhooks").status_code == 401
    assert secret not in client.get(f"/api/v1/jobs/{job_id}/webhooks", headers=headers).text
    assert len(receiver.deliveries()) == 1


def test_start_and_progress_events_with_progress_throttled(
    client: TestClient, receiver: WebhookReceiver, headers: dict[str, str], https_server: HttpsServer
) -> None:
    """A JSON body with webhook_events as an array; progress at most once per PROGRESS_INTERVAL_SECONDS."""
    receiver.trust(secret_of(client, headers))
    body = {
        "prompt": "a lighthouse",
        "image_url": https_server.add("webhook-input.png", image_bytes(), "image/png"),
        "webhook_url": receiver.url("steps"),
        "webhook_events": ["progress", "start", "progress"],
    }
    response = client.post("/api/v1/generate", headers=headers, json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    with factory(client)() as session:
        assert session.scalar(select(Job.webhook_events).where(Job.id == job_id)) == ["start", "progress"]
    start(client, job_id)
    for value in (10, 20, 30):
        progress(client, job_id, value)
    assert [d["event"] for d in listing(client, headers, job_id)] == ["start", "progress"]
    receiver.wait_for(2, "steps")

    # Once the interval has passed since the last progress delivery, the next progress goes out.
    with factory(client).begin() as session:
        for delivery in session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)):
            delivery.created_at -= timedelta(seconds=PROGRESS_INTERVAL_SECONDS)
    progress(client, job_id, 40)
    complete(client, job_id)  # not asked for
    deliveries = sorted(receiver.wait_for(3, "steps"), key=lambda delivery: delivery.event_seq)
    assert [(d.payload()["status"], d.payload()["progress"]) for d in deliveries] == [
        ("processing", 0),
        ("processing", 10),
        ("processing", 40),
    ]
    assert all(len(d.verified_by) == 1 for d in deliveries)
    found = wait_listing(client, headers, job_id, states("delivered", "delivered", "delivered"))
    assert [d["event"] for d in found] == ["start", "progress", "progress"]
    assert len({d["webhook_id"] for d in found}) == 3


def test_retries_keep_the_id_and_body_with_a_fresh_signature(
    make_settings: MakeSettings, receiver: WebhookReceiver
) -> None:
    receiver.plan("flaky", Reply(500), Reply(hang=True), Reply(200))
    retries = {"webhook_timeout_seconds": 0.5, "webhook_retry_seconds": [1.1, 1.0]}
    with hooked_app(make_settings, receiver, **retries) as client:
        headers = {"X-API-Key": create_api_key(client, "rita@example.com")}
        secret = secret_of(client, headers)
        receiver.trust(secret)
        job_id = submit(client, headers, webhook_url=receiver.url("flaky"))
        cancel(client, headers, job_id)  # a cancelled job has ended: "completed"

        def retrying(code: int | None, attempts: int) -> Callable[[Listing], bool]:
            return lambda found: (
                [(d["state"], d["attempts"], d["last_status_code"]) for d in found]
                == [("pending", attempts, code)]
                and found[0]["next_attempt_at"] is not None
            )

        wait_listing(client, headers, job_id, retrying(500, 1))
        assert last_errors(factory(client), job_id) == ["the receiver answered HTTP 500"]
        wait_listing(client, headers, job_id, retrying(None, 2))
        assert last_errors(factory(client), job_id) == ["no answer within 0.5 seconds"]
        first, second, third = receiver.wait_for(3, "flaky")
        (done,) = wait_listing(client, headers, job_id, states("delivered"))
    assert (done["attempts"], done["last_status_code"]) == (3, 200)
    assert first.message_id == second.message_id == third.message_id == done["webhook_id"]
    assert first.body == second.body == third.body
    assert first.verified_by == second.verified_by == third.verified_by == {secret}
    assert third.timestamp > first.timestamp and third.signatures != first.signatures


def test_a_delivery_is_given_up_after_the_last_retry_and_redirects_are_not_followed(
    make_settings: MakeSettings, receiver: WebhookReceiver
) -> None:
    receiver.plan("moved", Reply(302, {"Location": receiver.url("elsewhere")}), Reply(500), Reply(503))
    with hooked_app(make_settings, receiver, webhook_retry_seconds=[0.1, 0.1]) as client:
        headers = {"X-API-Key": create_api_key(client, "gus@example.com")}
        job_id = submit(client, headers, webhook_url=receiver.url("moved"))
        with factory(client)() as session:  # submitting with a webhook made the user a secret
            secret = session.scalar(select(User.webhook_secret).where(User.email == "gus@example.com"))
        assert secret and secret_of(client, headers) == secret
        receiver.trust(secret)
        cancel(client, headers, job_id)
        (given_up,) = wait_listing(client, headers, job_id, states("failed"))
        assert (given_up["attempts"], given_up["last_status_code"], given_up["next_attempt_at"]) == (
            3,
            503,
            None,
        )
        assert last_errors(factory(client), job_id) == ["the receiver answered HTTP 503"]
    assert len(receiver.deliveries("moved")) == 3 and receiver.deliveries("elsewhere") == []
    assert all(d.verified_by == {secret} for d in receiver.deliveries("moved"))


def test_410_disables_the_jobs_webhook(make_settings: MakeSettings, receiver: WebhookReceiver) -> None:
    receiver.plan("gone", Reply(500), Reply(410))
    with hooked_app(make_settings, receiver, webhook_retry_seconds=[60.0]) as client:
        headers = {"X-API-Key": create_api_key(client, "gina@example.com")}
        job_id = submit(
            client, headers, webhook_url=receiver.url("gone"), webhook_events="start,progress,completed"
        )
        start(client, job_id)  # answered 500: retried in a minute
        wait_listing(client, headers, job_id, lambda found: found[0]["last_status_code"] == 500)
        progress(client, job_id, 10)  # answered 410
        found = wait_listing(client, headers, job_id, states("disabled", "disabled"))
        assert [(d["event"], d["attempts"], d["last_status_code"]) for d in found] == [
            ("start", 1, 500),
            ("progress", 1, 410),
        ]
        complete(client, job_id)
        assert len(listing(client, headers, job_id)) == 2  # no delivery for the end
        with factory(client)() as session:
            assert session.scalar(select(Job.webhook_url).where(Job.id == job_id)) is None
    assert [d.reply.status for d in receiver.deliveries("gone")] == [500, 410]


def test_retry_after_is_honoured_when_longer(make_settings: MakeSettings, receiver: WebhookReceiver) -> None:
    receiver.plan("busy", Reply(429, {"Retry-After": "2"}))
    with hooked_app(make_settings, receiver, webhook_retry_seconds=[0.1]) as client:
        headers = {"X-API-Key": create_api_key(client, "rob@example.com")}
        job_id = submit(client, headers, webhook_url=receiver.url("busy"))
        cancel(client, headers, job_id)
        first, second = receiver.wait_for(2, "busy")
        (done,) = wait_listing(client, headers, job_id, states("delivered"))
    assert second.received_at - first.received_at >= 2.0
    assert (done["attempts"], done["last_status_code"]) == (2, 204)


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert retry_after_seconds("Fri, 01 May 2026 11:00:00 GMT", now) == 0.0  # in the past
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None


def test_private_targets_are_refused_at_submission_and_at_delivery(
    make_settings: MakeSettings, receiver: WebhookReceiver
) -> None:
    """Without the allow list, loopback and private targets are refused when submitted; a job whose
    target was allowed when submitted is refused at delivery once it is not, before any connection."""
    with TestClient(create_app(make_settings())) as plain:
        headers = {"X-API-Key": create_api_key(plain, "pia@example.com")}
        cases = {
            f"https://127.0.0.1:{receiver.port}/hook": "127.0.0.1 is a private or reserved address",
            f"https://localhost:{receiver.port}/hook": "localhost is an internal host",
            "https://10.1.2.3/hook": "10.1.2.3 is a private or reserved address",
            "https://[::1]/hook": "::1 is a private or reserved address",
            "https://2130706433/hook": "2130706433 is a private or reserved address",
            "https://metadata.google.internal/hook": "metadata.google.internal is an internal host",
            "http://example.com/hook": "webhook URLs must use https, not http",
            "https://user:pw@example.com/hook": "webhook URLs must not contain credentials",
        }
        for url, problem in cases.items():
            response = plain.post(
                "/api/v1/generate",
                headers=headers,
                data={"prompt": "a cat", "webhook_url": url},
                files={"image": ("in.png", image_bytes(), "image/png")},
            )
            assert response.status_code == 400, url
            assert response.json() == {"error": "Invalid parameters", "details": [f"webhook_url: {problem}"]}
        both = plain.post(
            "/api/v1/generate",
            headers=headers,
            data={"prompt": "a cat", "webhook_url": "http://example.com/", "webhook_events": "start,end,x"},
            files={"image": ("in.png", image_bytes(), "image/png")},
        )
        assert both.status_code == 400 and both.json()["details"] == [
            "webhook_url: webhook URLs must use https, not http",
            "webhook_events: unknown event 'end'; use start, progress, completed",
            "webhook_events: unknown event 'x'; use start, progress, completed",
        ]
        lone = plain.post(
            "/api/v1/generate", headers=headers, json={"prompt": "a", "webhook_events": "start"}
        )
        assert "webhook_events needs webhook_url" in lone.json()["details"]
        urlencoded = plain.post(
            "/api/v1/generate",
            headers=headers,
            data={
                "prompt": "a",
                "image_url": "https://example.com/a.png",
                "webhook_url": "https://example.com/hook",
                "webhook_events": '["start", "bogus"]',
            },
        )
        assert urlencoded.status_code == 400 and urlencoded.json()["details"] == [
            "webhook_events: unknown event 'bogus'; use start, progress, completed"
        ]
        assert plain.get("/api/v1/history", headers=headers).json()["count"] == 0

    with hooked_app(make_settings, receiver) as allowing:
        by_name = submit(allowing, headers, webhook_url=receiver.url("private"))
        by_address = submit(allowing, headers, webhook_url=f"https://127.0.0.1:{receiver.port}/private")
    with TestClient(create_app(make_settings(webhook_retry_seconds=[60.0]))) as plain:
        for job_id, problem in ((by_name, "internal host"), (by_address, "private or reserved address")):
            cancel(plain, headers, job_id)
            (refused,) = wait_listing(
                plain, headers, job_id, lambda found: found[0]["last_error"] is not None
            )
            assert (refused["state"], refused["attempts"], refused["last_status_code"]) == (
                "pending",
                1,
                None,
            )
            assert problem in refused["last_error"] and refused["next_attempt_at"]
    assert receiver.deliveries("private") == []


def test_rotation_signs_with_both_secrets_during_the_overlap(
    client: TestClient, receiver: WebhookReceiver, headers: dict[str, str]
) -> None:
    old = secret_of(client, headers)
    assert old.startswith("whsec_") and len(base64.b64decode(old.removeprefix("whsec_"))) == 32
    assert secret_of(client, headers) == old
    rotated = client.post("/api/v1/webhooks/secret/rotate", headers=headers)
    assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
    new = rotated.json()["secret"]
    assert new != old and secret_of(client, headers) == new
    bob = {"X-API-Key": create_api_key(client, "bob@example.com")}
    assert secret_of(client, bob) not in (old, new)
    receiver.trust(old, new)

    during = submit(client, headers, webhook_url=receiver.url("rotation"))
    cancel(client, headers, during)
    (first,) = receiver.wait_for(1, "rotation")
    assert first.verified_by == {old, new} and len(first.signatures) == 2

    # Once the overlap is over, only the new secret signs.
    overlap = timedelta(seconds=app_state(client).settings.webhook_secret_overlap_seconds)
    with factory(client).begin() as session:
        user = session.scalars(select(User).where(User.webhook_secret == new)).one()
        assert user.webhook_secret_rotated_at is not None
        user.webhook_secret_rotated_at -= overlap
    after = submit(client, headers, webhook_url=receiver.url("rotation"))
    cancel(client, headers, after)
    _, second = receiver.wait_for(2, "rotation")
    assert second.verified_by == {new} and len(second.signatures) == 1


def test_concurrent_first_requests_get_the_same_secret(make_settings: MakeSettings) -> None:
    with serving(make_settings()) as (url, state):
        headers = new_key(state, "cleo@example.com")

        def get_secret(_: int) -> str:
            response = httpx.get(f"{url}/api/v1/webhooks/secret", headers=headers, timeout=30)
            assert response.status_code == 200, response.text
            secret: str = response.json()["secret"]
            return secret

        with ThreadPoolExecutor(8) as pool:
            secrets = set(pool.map(get_secret, range(16)))
    assert len(secrets) == 1


def test_a_server_killed_before_delivering_loses_nothing_and_repeats_nothing(
    database_url: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """Server A commits a job's end (its outbox row with it), starts the delivery, and is killed while
    the receiver holds the request; server B delivers it once more, with the same webhook-id, after A's
    lease expired; and never again after the 2xx."""
    env = {
        **settings_env(
            database_url=database_url,
            workers=0,
            data_dir=tmp_path / "data",
            webhook_timeout_seconds=1.5,
            webhook_retry_seconds=[0.2],
        ),
        **receiver.env(),
    }
    headers = {"X-API-Key": create_key(database_url, "kim@example.com")}
    hold = threading.Event()
    receiver.plan("durable", Reply(200, hold=hold))
    with running_server(env, tmp_path, name="a") as a:
        secret = httpx.get(f"{a.url}/api/v1/webhooks/secret", headers=headers).json()["secret"]
        receiver.trust(secret)
        job_id = submit_over_http(a.url, headers, webhook_url=receiver.url("durable"))
        assert httpx.post(f"{a.url}/api/v1/cancel/{job_id}", headers=headers).status_code == 200
        receiver.wait_held("durable")
        a.kill()
    hold.set()
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            row = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
            assert (row.state, row.attempts) == ("pending", 1) and row.lease_owner is not None
    finally:
        engine.dispose()

    with running_server(env, tmp_path, name="b") as b:
        first, second = receiver.wait_for(2, "durable", timeout=30)
        deadline = time.monotonic() + 15
        while (found := httpx.get(f"{b.url}/api/v1/jobs/{job_id}/webhooks", headers=headers).json())[
            "deliveries"
        ][0]["state"] != "delivered":
            assert time.monotonic() < deadline, found
            time.sleep(0.02)
        # A later delivery goes out after it: B's sender has passed over the delivered one since.
        later = submit_over_http(b.url, headers, webhook_url=receiver.url("later"))
        assert httpx.post(f"{b.url}/api/v1/cancel/{later}", headers=headers).status_code == 200
        receiver.wait_for(1, "later")
    (delivered,) = found["deliveries"]
    assert (delivered["attempts"], delivered["last_status_code"]) == (2, 204)
    assert first.message_id == second.message_id == delivered["webhook_id"]
    assert first.body == second.body and first.verified_by == second.verified_by == {secret}
    assert len(receiver.deliveries("durable")) == 2


def test_two_servers_share_the_outbox_and_send_each_delivery_once(
    make_settings: MakeSettings, receiver: WebhookReceiver
) -> None:
    with hooked_app(make_settings, receiver) as one, hooked_app(make_settings, receiver) as two:
        headers = {"X-API-Key": create_api_key(one, "sam@example.com")}
        receiver.trust(secret_of(two, headers))
        job_ids = [submit(one, headers, webhook_url=receiver.url("shared")) for _ in range(12)]
        for index, job_id in enumerate(job_ids):
            cancel(one if index % 2 else two, headers, job_id)
        deliveries = receiver.wait_for(12, "shared")
        for job_id in job_ids:
            wait_listing(one, headers, job_id, states("delivered"))
    assert len(receiver.deliveries("shared")) == 12
    assert sorted(d.payload()["job_id"] for d in deliveries) == sorted(job_ids)
    assert len({d.message_id for d in deliveries}) == 12 and all(len(d.verified_by) == 1 for d in deliveries)
