"""The web app's defences, in real Chromium against the real served app: CSRF tokens and same-site
checks, the log-in throttle, answers that do not tell whether an email has an account, other users'
jobs, and user text that stays text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Dialog, Page, Response, expect

from tests.api.conftest import image_bytes
from tests.web.conftest import Screenshot
from tests.web.webapp import (
    PASSWORD,
    Site,
    assert_no_console_errors,
    fill_generate,
    log_in,
    path_of,
    serve,
    submit_generate,
    unique_email,
    visible_text,
    wait_for_early_in_a_window,
)
from vividflow.apiserver.sessions import CSRF_FIELD
from vividflow.settings import Settings

XSS_PROMPT = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
XSS_KEY_NAME = 'a" autofocus onfocus="window.__xss=3'
"""Key names refuse < and >: quotes and & are what could break out of an attribute."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The app without an executor (jobs stay queued), shared by this module's tests, each with its
    own users."""
    with serve(tmp_path_factory.mktemp("security-site")) as served:
        yield served


def csrf_token(page: Page) -> str:
    token: str = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
    assert len(token) >= 32, token
    return token


def submitted(page: Page, click: str) -> Response:
    """Click ``click`` (a form's submit button), wait for the page it leads to, and return the
    response to the form's post (a 303, say, where that led on)."""
    with page.expect_navigation() as navigation:
        page.click(click)
    final = navigation.value
    assert final is not None
    request = final.request
    while request.redirected_from is not None:
        request = request.redirected_from
    response = request.response()
    assert response is not None
    return response


def test_forms_without_the_pages_token_or_from_another_site_are_refused(
    page: Page, console_errors: list[str], site: Site
) -> None:
    email = site.user("csrf")
    page.goto(f"{site.url}/login")
    visitor_token = csrf_token(page)  # this browser's token before it logged in
    log_in(page, site, email)
    page.goto(f"{site.url}/account")
    token = csrf_token(page)
    assert token != visitor_token

    # A forged token in the page's own form: refused, nothing made.
    page.locator(f"#create-key input[name={CSRF_FIELD}]").evaluate("(input) => { input.value = 'forged'; }")
    page.fill("#key-name", "forged-token")
    response = submitted(page, "#create-key button[type=submit]")
    assert response.status == 403
    expect(page.locator("h1")).to_have_text("Form refused")
    expect(page.locator("main")).to_contain_text("did not come from this site")
    assert site.key_names(email) == []
    assert_no_console_errors(console_errors, "the refused form", f"{site.url}/account/keys")

    # With the session's cookie (the browser's request context shares it) but no token, a wrong one,
    # this browser's token from before it logged in, or the right token sent from another site.
    account = f"{site.url}/account/keys"
    refusals = {
        "no token": page.request.post(account, form={"name": "no-token"}),
        "a wrong token": page.request.post(account, form={"name": "wrong", CSRF_FIELD: "0" * 64}),
        "the token from before the log-in": page.request.post(
            account, form={"name": "old-token", CSRF_FIELD: visitor_token}
        ),
        "cross-site Origin": page.request.post(
            account,
            form={"name": "cross-origin", CSRF_FIELD: token},
            headers={"Origin": "https://evil.example"},
        ),
        "cross-site fetch": page.request.post(
            account, form={"name": "cross-fetch", CSRF_FIELD: token}, headers={"Sec-Fetch-Site": "cross-site"}
        ),
    }
    assert {why: response.status for why, response in refusals.items()} == dict.fromkeys(refusals, 403)
    assert all("Form refused" in response.text() for response in refusals.values())
    assert site.key_names(email) == []
    logout = page.request.post(f"{site.url}/logout", form={})
    assert logout.status == 403
    page.goto(f"{site.url}/account")
    expect(page).to_have_url(f"{site.url}/account")  # still logged in

    # The same request with the page's token from this site is taken (the refusals were the token's).
    accepted = page.request.post(
        account, form={"name": "with-token", CSRF_FIELD: token}, headers={"Origin": site.url}
    )
    assert accepted.status == 200, accepted.text()
    assert site.key_names(email) == ["with-token"]

    # Without the session's cookie (another client) the token is worthless.
    cookies = {c["name"]: c["value"] for c in page.context.cookies() if c["name"] != "vividflow_session"}
    stranger = httpx.post(account, data={"name": "stranger", CSRF_FIELD: token}, cookies=cookies, timeout=10)
    assert stranger.status_code == 303 and stranger.headers["location"].startswith("/login"), stranger.text
    assert site.key_names(email) == ["with-token"]


def test_the_21st_log_in_attempt_in_a_minute_is_refused_with_a_friendly_page(
    page: Page, console_errors: list[str], screenshot: Screenshot, tmp_path: Path
) -> None:
    default = Settings.model_fields["web_auth_limits"].get_default(call_default_factory=True)
    assert default == ["20/minute"]
    with serve(tmp_path / "site", web_auth_limits=default) as site:  # counted afresh, for this test only
        email = site.user("throttled")
        # The limiter's sliding window weighs the previous minute's attempts down as the new minute goes
        # on: 21 attempts straddling a minute boundary may all pass. Start early in a minute.
        wait_for_early_in_a_window(60, room=40)
        page.goto(f"{site.url}/login")
        token = csrf_token(page)
        for attempt in range(1, 21):
            answer = page.request.post(
                f"{site.url}/login", form={"email": email, "password": f"wrong {attempt}", CSRF_FIELD: token}
            )
            assert answer.status == 400, (attempt, answer.status)
            assert "The email or password is not right." in answer.text()

        # The 21st, in the browser: refused, even with the right password.
        page.fill("#email", email)
        page.fill("#password", PASSWORD)
        response = submitted(page, "#login-form button[type=submit]")
        assert response.status == 429
        assert int(response.headers["retry-after"]) > 0
        expect(page.locator("h1")).to_have_text("Too many attempts")
        expect(page.locator("main")).to_contain_text("Please wait")
        expect(page).to_have_url(f"{site.url}/login")
        screenshot(page, "throttled")
        assert_no_console_errors(console_errors, "the throttled page", f"{site.url}/login")
        page.goto(f"{site.url}/generate")
        expect(page).to_have_url(f"{site.url}/login?next=/generate")  # not logged in


def register(page: Page, site: Site, email: str, password: str) -> tuple[int, str, str]:
    """Register through the form: (status of the post, the URL it led to, what that page says)."""
    page.goto(f"{site.url}/register")
    page.fill("#email", email)
    page.fill("#password", password)
    page.fill("#password_confirm", password)
    response = submitted(page, "#register-form button[type=submit]")
    return response.status, path_of(page, site), visible_text(page)


def attempt_log_in(page: Page, site: Site, email: str, password: str) -> tuple[int, str, str]:
    page.goto(f"{site.url}/login")
    page.fill("#email", email)
    page.fill("#password", password)
    response = submitted(page, "#login-form button[type=submit]")
    return response.status, path_of(page, site), visible_text(page)


def test_answers_do_not_tell_whether_an_email_has_an_account(
    page: Page, console_errors: list[str], site: Site
) -> None:
    known = site.user("known")

    taken = register(page, site, known, "another long passphrase 7")
    fresh = register(page, site, unique_email("fresh"), "another long passphrase 7")
    assert taken == fresh
    assert taken[:2] == (303, "/login?registered=true")
    assert "Registration received" in taken[2]

    wrong_password = attempt_log_in(page, site, known, "not the password at all")
    unknown_email = attempt_log_in(page, site, unique_email("nobody"), "not the password at all")
    assert wrong_password == unknown_email
    assert wrong_password[:2] == (400, "/login")
    assert "The email or password is not right." in wrong_password[2]
    assert_no_console_errors(console_errors, "log-in and registration", f"{site.url}/login")

    # Registering the taken email changed nothing: its own password still logs in, the other not.
    assert attempt_log_in(page, site, known, "another long passphrase 7")[0] == 400
    log_in(page, site, known)


def test_another_users_job_page_is_refused_without_its_prompt(
    page: Page, console_errors: list[str], screenshot: Screenshot, site: Site
) -> None:
    owner = site.user("owner")
    secret_prompt = f"the private prompt of {owner}"
    job = httpx.post(
        f"{site.url}/api/v1/generate",
        headers={"X-API-Key": site.api_key(owner)},
        data={"prompt": secret_prompt, "model": "wan2.1"},
        files={"image": ("still.png", image_bytes("PNG", (48, 32)), "image/png")},
        timeout=30,
    )
    assert job.status_code == 202, job.text
    job_id = job.json()["job_id"]

    log_in(page, site, site.user("intruder"))
    response = page.goto(f"{site.url}/jobs/{job_id}")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Access denied")
    expect(page.locator("main")).to_contain_text("This job belongs to another user.")
    assert secret_prompt not in page.content()
    screenshot(page, "error-403")
    assert_no_console_errors(console_errors, "the 403 page", f"{site.url}/jobs/{job_id}")

    # Nor through its status stream, its cancel form or the "use these settings again" link.
    stream = page.request.get(f"{site.url}/api/v1/status/{job_id}/events")
    assert stream.status == 403 and secret_prompt not in stream.text()
    cancel = page.request.post(f"{site.url}/jobs/{job_id}/cancel", form={CSRF_FIELD: csrf_token(page)})
    assert cancel.status == 403
    assert site.job(job_id).status == "queued"
    page.goto(f"{site.url}/generate?from={job_id}")
    expect(page.locator("#prompt")).to_have_value("")
    assert secret_prompt not in page.content()
    missing = page.goto(f"{site.url}/jobs/00000000-0000-0000-0000-000000000000")
    assert missing is not None and missing.status == 404


def xss_ran(page: Page) -> object:
    return page.evaluate("() => window.__xss")


def test_user_text_is_shown_as_text_and_never_runs(
    page: Page, console_errors: list[str], screenshot: Screenshot, site: Site
) -> None:
    email = site.user("xss")
    log_in(page, site, email)

    # A prompt with markup: text on the job page, in history and back in the form.
    fill_generate(page, XSS_PROMPT)
    job_id = submit_generate(page, site)
    assert site.job(job_id).prompt == XSS_PROMPT
    expect(page.locator("details .prompt")).to_have_text(XSS_PROMPT)
    assert page.locator("main img, main script:not([type='application/json'])").count() == 0
    assert xss_ran(page) is None
    page.goto(f"{site.url}/history")
    expect(page.locator("#gallery li.card .prompt")).to_have_text(XSS_PROMPT)
    assert page.locator("main img").count() == 0
    assert xss_ran(page) is None
    page.goto(f"{site.url}/generate?from={job_id}")
    expect(page.locator("#prompt")).to_have_value(XSS_PROMPT)
    assert xss_ran(page) is None
    # An inline script that got into a page would also be a CSP violation, a console error.
    assert_no_console_errors(console_errors, "pages showing the prompt")

    # A key name with quotes and an ampersand stays inside its attributes and text.
    page.goto(f"{site.url}/account")
    page.fill("#key-name", XSS_KEY_NAME + " & co")
    page.locator("#create-key button[type=submit]").click()
    expect(page.locator("#new-key-heading")).to_contain_text(XSS_KEY_NAME + " & co")
    expect(page.locator("#keys .key-name")).to_have_text(XSS_KEY_NAME + " & co")
    assert page.locator("[onfocus], [autofocus]").count() == 0
    page.locator("#keys tr[data-key-id] button").focus()
    assert xss_ran(page) is None
    confirm = page.locator("#keys form[data-confirm]").get_attribute("data-confirm") or ""
    assert XSS_KEY_NAME + " & co" in confirm
    messages: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.locator("#keys tr[data-key-id] button").click()
    assert len(messages) == 1 and XSS_KEY_NAME + " & co" in messages[0]
    expect(page).to_have_url(f"{site.url}/account/keys")  # dismissed: nothing was posted
    assert site.key_names(email, active=True) == [XSS_KEY_NAME + " & co"]
    assert xss_ran(page) is None
    assert_no_console_errors(console_errors, "/account with the key")
