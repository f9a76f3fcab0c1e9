"""The web app's accounts and sessions over HTTP, on SQLite and PostgreSQL: registration and
log-in that tell nothing about which emails exist, their throttle, CSRF, and sessions that end
when they should and never stand in for an API key."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.api.conftest import MakeSettings, app_state, create_api_key
from tests.api.web_client import PASSWORD, csrf_token, log_in, post_form, register, signed_up, visible_text
from vividflow.apiserver.app import create_app
from vividflow.apiserver.db.models import User, WebSession
from vividflow.apiserver.services import accounts

OTHER_PASSWORD = "copper-meadow-sunrise"


def _user(client: TestClient, email: str) -> User | None:
    with app_state(client).session_factory() as session:
        return session.scalars(select(User).where(User.email == email)).first()


def _session_count(client: TestClient) -> int:
    with app_state(client).session_factory() as session:
        return len(session.scalars(select(WebSession)).all())


def test_register_and_log_in(client: TestClient) -> None:
    registered = register(client, "Ann@Example.com")
    assert registered.status_code == 303 and registered.headers["location"] == "/login?registered=true"
    user = _user(client, "ann@example.com")
    assert user is not None and user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash

    logged_in = log_in(client, "ann@example.com")
    assert logged_in.status_code == 303 and logged_in.headers["location"] == "/generate"
    cookie = logged_in.headers["set-cookie"]
    assert "vividflow_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # the public URL is http here
    page = client.get("/generate")
    assert page.status_code == 200 and "ann@example.com" in page.text
    assert client.get("/account").status_code == 200


def test_session_cookie_is_secure_behind_an_https_public_url(make_settings: MakeSettings) -> None:
    app = create_app(make_settings(public_url="https://video.example.com"))
    with TestClient(app, base_url="https://video.example.com") as client:
        register(client, "sec@example.com")
        answer = log_in(client, "sec@example.com")
    assert answer.status_code == 303 and "Secure" in answer.headers["set-cookie"]


def test_registration_answers_alike_for_new_and_taken_emails(client: TestClient) -> None:
    first = register(client, "taken@example.com")
    again = register(client, "taken@example.com", OTHER_PASSWORD)
    new = register(client, "fresh@example.com", OTHER_PASSWORD)
    assert first.status_code == again.status_code == new.status_code == 303
    assert first.headers["location"] == again.headers["location"] == new.headers["location"]
    # The taken account kept its password: the second registration changed nothing.
    assert log_in(client, "taken@example.com", OTHER_PASSWORD).status_code == 400
    assert log_in(client, "taken@example.com").status_code == 303


def test_registering_the_email_of_a_key_only_user_does_not_take_the_account(client: TestClient) -> None:
    key = create_api_key(client, "keyed@example.com")
    assert register(client, "KEYED@example.com", OTHER_PASSWORD).status_code == 303
    user = _user(client, "keyed@example.com")
    assert user is not None and user.password_hash is None
    assert log_in(client, "keyed@example.com", OTHER_PASSWORD).status_code == 400
    assert client.get("/api/v1/usage", headers={"X-API-Key": key}).status_code == 200


def test_log_in_answers_alike_for_unknown_emails_and_wrong_passwords(client: TestClient) -> None:
    register(client, "known@example.com")
    wrong = log_in(client, "known@example.com", OTHER_PASSWORD)
    unknown = log_in(client, "nobody@example.com", OTHER_PASSWORD)
    no_password = log_in(client, "keyed@example.com", OTHER_PASSWORD)
    create_api_key(client, "keyed@example.com")
    key_only = log_in(client, "keyed@example.com", OTHER_PASSWORD)
    assert wrong.status_code == unknown.status_code == no_password.status_code == key_only.status_code == 400
    texts = {
        visible_text(page).replace(email, "EMAIL")
        for page, email in (
            (wrong, "known@example.com"),
            (unknown, "nobody@example.com"),
            (key_only, "keyed@example.com"),
        )
    }
    assert len(texts) == 1 and "The email or password is not right." in texts.pop()
    assert "set-cookie" not in wrong.headers or "vividflow_session" not in wrong.headers["set-cookie"]


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short1", "at least 10 characters"),
        ("qwertyuiop", "most common"),
        ("password123", "most common"),
        ("weak@example.com", "must not be your email"),
    ],
)
def test_weak_passwords_are_refused(client: TestClient, password: str, problem: str) -> None:
    answer = register(client, "weak@example.com", password)
    assert answer.status_code == 400 and problem in answer.text
    assert _user(client, "weak@example.com") is None


def test_mismatched_confirmation_and_bad_email_are_explained(client: TestClient) -> None:
    token = csrf_token(client.get("/register"))
    form = {"csrf_token": token, "email": "not-an-email", "password": PASSWORD, "password_confirm": "other"}
    answer = client.post("/register", data=form)
    assert answer.status_code == 400
    assert "Enter an email address" in answer.text and "The two passwords differ." in answer.text


def test_log_in_is_throttled_per_email(make_settings: MakeSettings) -> None:
    # 20 a day, not the default 20 a minute: the limiter's sliding window weighs the previous window's
    # attempts down, so 20 attempts straddling a minute boundary could all pass.
    with TestClient(create_app(make_settings(web_auth_limits=["20/day"]))) as client:
        register(client, "target@example.com")
        for _ in range(19):  # the registration counted once
            assert log_in(client, "target@example.com", OTHER_PASSWORD).status_code == 400
        refused = log_in(client, "target@example.com")  # even the right password, past the limit
    assert refused.status_code == 429 and "Too many attempts" in refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert "vividflow_session" not in refused.headers.get("set-cookie", "")


def test_log_in_is_throttled_per_address(make_settings: MakeSettings) -> None:
    with TestClient(create_app(make_settings(web_auth_limits=["5/day"]))) as client:
        for number in range(5):
            assert log_in(client, f"guess{number}@example.com").status_code == 400
        assert log_in(client, "guess-more@example.com").status_code == 429
        assert register(client, "late@example.com").status_code == 429
        assert _user(client, "late@example.com") is None


def test_forms_without_the_csrf_token_are_refused(client: TestClient) -> None:
    signed_up(client, "csrf@example.com")
    no_token = client.post("/account/keys", data={"name": "sneaky"})
    wrong = client.post("/account/keys", data={"name": "sneaky", "csrf_token": "0" * 64})
    token = csrf_token(client.get("/account"))
    cross_site = client.post(
        "/account/keys",
        data={"name": "sneaky", "csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    fetch_cross = client.post(
        "/account/keys",
        data={"name": "sneaky", "csrf_token": token},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    for answer in (no_token, wrong, cross_site, fetch_cross):
        assert answer.status_code == 403 and "This form has expired" in answer.text
    assert "sneaky" not in client.get("/account").text
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/account").status_code == 200  # still logged in
    anonymous = TestClient(client.app)
    assert (
        anonymous.post("/login", data={"email": "csrf@example.com", "password": PASSWORD}).status_code == 403
    )


def test_a_token_of_one_session_is_useless_in_another(client: TestClient) -> None:
    signed_up(client, "one@example.com")
    token = csrf_token(client.get("/account"))
    other = signed_up(TestClient(client.app), "two@example.com")
    answer = other.post("/account/keys", data={"name": "x", "csrf_token": token})
    assert answer.status_code == 403


def test_log_out_ends_the_session_on_the_server(client: TestClient) -> None:
    signed_up(client, "out@example.com")
    copy = TestClient(client.app, cookies=dict(client.cookies))
    assert copy.get("/account").status_code == 200
    answer = post_form(client, "/account", "/logout", {})
    assert answer.status_code == 303 and answer.headers["location"] == "/login?logged_out=true"
    gone = copy.get("/account", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login?next=")
    assert _session_count(client) == 0


def test_a_password_change_ends_the_other_sessions(client: TestClient) -> None:
    signed_up(client, "change@example.com")
    elsewhere = TestClient(client.app)
    assert log_in(elsewhere, "change@example.com").status_code == 303
    wrong = post_form(
        client,
        "/account",
        "/account/password",
        {
            "current_password": OTHER_PASSWORD,
            "new_password": OTHER_PASSWORD,
            "new_password_confirm": OTHER_PASSWORD,
        },
    )
    assert wrong.status_code == 400 and "current password is not right" in wrong.text
    changed = post_form(
        client,
        "/account",
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": OTHER_PASSWORD,
            "new_password_confirm": OTHER_PASSWORD,
        },
    )
    assert changed.status_code == 303
    assert client.get("/account").status_code == 200
    assert elsewhere.get("/account", follow_redirects=False).status_code == 303
    assert log_in(TestClient(client.app), "change@example.com", OTHER_PASSWORD).status_code == 303
    assert log_in(TestClient(client.app), "change@example.com", PASSWORD).status_code == 400


def test_a_session_is_not_an_api_key(client: TestClient) -> None:
    signed_up(client, "cookie@example.com")
    for path in ("/api/v1/usage", "/api/v1/history", "/api/v1/keys"):
        assert client.get(path).status_code == 401, path
    tampered = TestClient(
        client.app, cookies={"vividflow_session": client.cookies["vividflow_session"] + "x"}
    )
    assert tampered.get("/account", follow_redirects=False).status_code == 303


def test_set_password_command_gives_a_key_only_user_a_password(tmp_path: Path) -> None:
    env = {**os.environ, "VIVID_DATA_DIR": str(tmp_path)}
    env.pop("VIVID_DATABASE_URL", None)

    def vividflow(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "vividflow.cli", *args]
        return subprocess.run(
            command, env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False
        )

    missing = vividflow("users", "set-password", "cli@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    assert missing.returncode == 1 and "no user with email cli@example.com" in missing.stderr
    assert vividflow("keys", "create", "--user", "cli@example.com").returncode == 0
    weak = vividflow("users", "set-password", "cli@example.com", "--password-stdin", stdin="password123\n")
    assert weak.returncode == 2 and "most common" in weak.stderr
    done = vividflow("users", "set-password", "CLI@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr

    from vividflow.settings import Settings

    settings = Settings(data_dir=tmp_path, workers=0, migrate_on_start=False)
    with TestClient(create_app(settings)) as client:
        assert log_in(client, "cli@example.com").status_code == 303


def test_password_hashes_are_argon2id_and_verify() -> None:
    digest = accounts.hash_password(PASSWORD)
    assert digest.startswith("$argon2id$")
    user = User(id="u", email="x@example.com", password_hash=digest)
    assert accounts.verify_password(user, PASSWORD) and not accounts.verify_password(user, OTHER_PASSWORD)


@pytest.mark.parametrize("column", ["last_seen_at", "expires_at"])
def test_idle_and_expired_sessions_end(client: TestClient, column: str) -> None:
    signed_up(client, f"{column}@example.com")
    assert client.get("/account").status_code == 200
    with app_state(client).session_factory.begin() as session:
        row = session.scalars(select(WebSession)).one()
        past = row.created_at - timedelta(days=30)
        setattr(row, column, past)
    answer = client.get("/account", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
