"""The web app as a user sees it, in real Chromium against the real served app and the real tiny Wan
pipeline: register, log in, keys, generate, watch the job live, the video, history, log out; prompt
enhancement; the pages without JavaScript, at phone width, and their labels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.api.conftest import image_bytes
from tests.fixtures.fake_vertex import ENHANCED_PREFIX, FakeVertex
from tests.web.conftest import CONTEXT_OPTIONS, DEFAULT_TIMEOUT_MS, Screenshot
from tests.web.webapp import (
    JOB_TIMEOUT_MS,
    PASSWORD,
    TINY_WAN,
    Site,
    assert_no_console_errors,
    fill_generate,
    log_in,
    scroll_width,
    serve,
    submit_generate,
    unique_email,
)
from vividflow.apiserver.services import jobs

PHONE_WIDTH = 390
RECORD_JOB_CHANGES = """() => {
    window.__samePage = true;  // gone if the page were reloaded or left
    window.__seen = [];
    const job = document.getElementById('job');
    const progress = document.getElementById('progress');
    const note = () => window.__seen.push(`${job.dataset.status}:${progress.value}`);
    const everything = {attributes: true, subtree: true, childList: true, characterData: true};
    new MutationObserver(note).observe(job, everything);
}"""
PLAY_TO_THE_END = """async (video) => {
    video.muted = true;
    const ended = new Promise((done) => video.addEventListener('ended', done, {once: true}));
    await video.play();
    await ended;
    return {ended: video.ended, currentTime: video.currentTime, width: video.videoWidth};
}"""
METADATA_LOADED = """(video) => video.readyState >= 1
    || new Promise((loaded) => video.addEventListener('loadedmetadata', loaded, {once: true}))"""


@pytest.fixture(scope="module")
def wan_site(tmp_path_factory: pytest.TempPathFactory, tiny_wan_model_dir: Path) -> Iterator[Site]:
    """The app with one executor running the tiny Wan pipeline, shared by the tests of this module
    that do not depend on how long a job takes (each with its own user)."""
    with serve(tmp_path_factory.mktemp("wan-site"), workers=1, wan_model=str(tiny_wan_model_dir)) as site:
        yield site


@pytest.fixture
def fresh_wan_site(tmp_path: Path, tiny_wan_model_dir: Path) -> Iterator[Site]:
    """The app with an executor of its own: its first job takes seconds (the runner starts and loads
    the pipeline), so its page is certain to see the job before it ends (later ones take ~0.3 s)."""
    with serve(tmp_path / "site", workers=1, wan_model=str(tiny_wan_model_dir)) as site:
        yield site


def test_register_log_in_key_generate_watch_history_revoke_log_out(
    page: Page, console_errors: list[str], screenshot: Screenshot, fresh_wan_site: Site
) -> None:
    site = fresh_wan_site
    email = unique_email("flow")

    # Anonymous: / leads to the log-in page, which leads to registration.
    page.goto(f"{site.url}/")
    expect(page).to_have_url(f"{site.url}/login")
    expect(page.locator("h1")).to_have_text("Log in")
    screenshot(page, "login")
    assert_no_console_errors(console_errors, "/login")
    page.click("main >> text=Register")
    expect(page).to_have_url(f"{site.url}/register")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.fill("#password_confirm", PASSWORD)
    screenshot(page, "register")
    page.locator("#register-form button[type=submit]").click()
    expect(page).to_have_url(f"{site.url}/login?registered=true")
    expect(page.locator(".notice")).to_contain_text("Registration received")
    assert_no_console_errors(console_errors, "/register")

    # Log in from the page the registration led to.
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.locator("#login-form button[type=submit]").click()
    expect(page).to_have_url(f"{site.url}/generate")
    expect(page.locator("footer")).to_contain_text(f"signed in as {email}")

    # A new API key, shown once, works on the API.
    page.click("nav >> text=Account")
    expect(page).to_have_url(f"{site.url}/account")
    page.fill("#key-name", "laptop")
    page.locator("#create-key button[type=submit]").click()
    secret = page.locator("#new-key-secret").input_value()
    assert len(secret) >= 20, secret
    expect(page.locator("#new-key-heading")).to_contain_text("laptop")
    row = page.locator("#keys tr[data-key-id]")
    expect(row).to_have_count(1)
    expect(row.locator(".key-name")).to_have_text("laptop")
    screenshot(page, "account")
    assert_no_console_errors(console_errors, "/account")
    api = {"X-API-Key": secret}
    usage = httpx.get(f"{site.url}/api/v1/usage", headers=api, timeout=10)
    assert usage.status_code == 200, usage.text
    assert usage.json()["total_jobs"] == 0

    # Generate with the tiny Wan model: the chosen model's parameters only, an uploaded still.
    page.click("nav >> text=Generate")
    expect(page).to_have_url(f"{site.url}/generate")
    expect(page.locator('fieldset.params[data-model="wan2.1"]')).to_be_visible()
    expect(page.locator('fieldset.params[data-model="veo3.1"]')).to_be_hidden()
    fill_generate(page, "a paper boat drifts across a pond")
    expect(page.locator("#preview")).to_be_visible()
    screenshot(page, "generate")
    assert_no_console_errors(console_errors, "/generate")
    job_id = submit_generate(page, site)

    # The job page follows the job live, without a reload, to 100 % and the video.
    initial = page.evaluate("() => JSON.parse(document.getElementById('job-status').textContent).status")
    assert initial in ("queued", "processing"), initial  # so what follows is the page updating itself
    page.evaluate(RECORD_JOB_CHANGES)
    screenshot(page, f"job-{initial}")
    job = page.locator("#job")
    expect(job).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    assert page.evaluate("() => window.__samePage") is True  # no navigation happened
    seen: list[str] = page.evaluate("() => window.__seen")
    assert seen and seen[-1] == "completed:100", seen
    progress = [int(entry.split(":")[1]) for entry in seen]
    assert progress == sorted(progress), seen  # it only ever rose
    expect(page.locator("#status-name")).to_have_text("Completed")
    assert page.evaluate("() => document.getElementById('progress').value") == 100
    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#cancel-queued")).to_be_hidden()
    expect(page.locator("#cancel-running")).to_be_hidden()
    expect(page.locator("#metrics dt").first).to_be_visible()
    page.wait_for_function(
        "() => { const v = document.getElementById('video'); return v.readyState >= 2 && v.duration > 0; }",
        timeout=30_000,
    )
    # It plays to its end (muted: a page may start muted videos without a click).
    played = page.locator("#video").evaluate(PLAY_TO_THE_END)
    assert played["ended"] and played["currentTime"] > 0 and played["width"] == 32, played
    status = httpx.get(f"{site.url}/api/v1/status/{job_id}", headers=api, timeout=10).json()
    assert status["status"] == "completed", status
    result_url = status["result_url"]
    assert result_url.startswith(f"{site.url}/"), result_url
    assert page.evaluate("() => document.getElementById('video').currentSrc") == result_url
    download = page.locator("#download")
    expect(download).to_have_attribute("href", result_url)
    expect(download).to_have_attribute("download", "")
    video = httpx.get(result_url, timeout=10)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp", video.headers
    screenshot(page, "job-completed")
    assert_no_console_errors(console_errors, "/jobs/{id}")
    (parameters,) = site.job(job_id).parameters.values()  # one model's section: wan2.1's
    assert {name: parameters[name] for name in TINY_WAN} == {k: int(v) for k, v in TINY_WAN.items()}
    assert "duration_seconds" not in parameters

    # History: the job, completed, with a thumbnail of its video.
    page.click("nav >> text=History")
    expect(page).to_have_url(f"{site.url}/history")
    card = page.locator("#gallery li.card")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-status", "completed")
    expect(card.locator(".prompt")).to_have_text("a paper boat drifts across a pond")
    thumb = card.locator("video.thumb")
    expect(thumb).to_have_attribute("src", f"{result_url}#t=0.1")
    thumb.evaluate(METADATA_LOADED)
    assert thumb.evaluate("(v) => v.duration") > 0
    expect(card.locator(f'a[href="/jobs/{job_id}"]')).to_be_visible()
    page.click("text=Completed")
    expect(page).to_have_url(f"{site.url}/history?status=completed")
    expect(page.locator("#gallery li.card")).to_have_count(1)
    page.click("nav[aria-label='Filter by status'] >> text=Failed")
    expect(page.locator("#gallery li.card")).to_have_count(0)
    screenshot(page, "history-empty-filter")
    page.goto(f"{site.url}/history")
    screenshot(page, "history")
    assert_no_console_errors(console_errors, "/history")
    usage = httpx.get(f"{site.url}/api/v1/usage", headers=api, timeout=10)
    assert usage.json()["completed_jobs"] == 1  # the key is the web account's

    # Revoke the key, accepting the browser's confirmation: the API refuses it at once.
    page.click("nav >> text=Account")
    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.locator("#keys tr[data-key-id] button", has_text="Revoke").click()
    expect(page).to_have_url(f"{site.url}/account?done=revoked")
    assert len(dialogs) == 1 and "laptop" in dialogs[0], dialogs
    expect(page.locator(".notice")).to_have_text("The key is revoked.")
    expect(page.locator("#new-key-secret")).to_have_count(0)  # shown once only
    refused = httpx.get(f"{site.url}/api/v1/usage", headers=api, timeout=10)
    assert refused.status_code == 401, refused.text
    assert_no_console_errors(console_errors, "/account after revoking")

    # Log out: the pages need a log-in again.
    page.click("#logout")
    expect(page).to_have_url(f"{site.url}/login?logged_out=true")
    expect(page.locator(".notice")).to_have_text("You are logged out.")
    page.goto(f"{site.url}/generate")
    expect(page).to_have_url(f"{site.url}/login?next=/generate")
    assert_no_console_errors(console_errors, "after logging out")


def test_a_revoked_key_is_listed_as_revoked(page: Page, wan_site: Site) -> None:
    site = wan_site
    log_in(page, site, site.user("revoker"))
    page.goto(f"{site.url}/account")
    page.fill("#key-name", "old")
    page.locator("#create-key button[type=submit]").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#keys tr[data-key-id] button", has_text="Revoke").click()
    expect(page).to_have_url(f"{site.url}/account?done=revoked")

    row = page.locator("#keys tr[data-key-id]")
    expect(row.locator(".badge")).to_contain_text("revoked", timeout=2_000)
    expect(row.locator("button", has_text="Revoke")).to_have_count(0)


def test_enhance_suggests_a_prompt_that_can_be_taken_or_left(
    page: Page, console_errors: list[str], screenshot: Screenshot, tmp_path: Path, fake_vertex: FakeVertex
) -> None:
    fake_vertex.set_scenario()
    with serve(tmp_path / "site", **fake_vertex.settings_overrides()) as site:
        log_in(page, site, site.user("enhancer"))
        enhance = page.locator("#enhance")
        expect(enhance).to_be_visible()
        expect(enhance).to_be_disabled()  # nothing to enhance yet
        page.fill("#prompt", "a fox in the snow")
        expect(enhance).to_be_enabled()

        enhance.click()
        suggestion = page.locator("#suggestion")
        expect(suggestion).to_be_visible()
        suggested = page.locator("#suggestion-text").inner_text()
        assert suggested.startswith(ENHANCED_PREFIX) and "a fox in the snow" in suggested, suggested
        (call,) = fake_vertex.generations
        assert "a fox in the snow" in call.user_text
        expect(page.locator("#prompt")).to_have_value("a fox in the snow")  # not replaced unasked
        screenshot(page, "generate-enhance")
        page.click("#suggestion-accept")
        expect(suggestion).to_be_hidden()
        expect(page.locator("#prompt")).to_have_value(suggested)

        page.fill("#prompt", "my own words")
        enhance.click()
        expect(suggestion).to_be_visible()
        expect(page.locator("#suggestion-text")).to_contain_text("my own words")
        page.click("#suggestion-reject")
        expect(suggestion).to_be_hidden()
        expect(page.locator("#prompt")).to_have_value("my own words")
        expect(page.locator("#enhance-error")).to_be_hidden()
        assert len(fake_vertex.generations) == 2
        assert_no_console_errors(console_errors, "/generate with enhancement")


@pytest.fixture
def no_js_page(browser: Browser) -> Iterator[Page]:
    """A desktop page with JavaScript turned off."""
    context = browser.new_context(
        **CONTEXT_OPTIONS, viewport={"width": 1280, "height": 900}, java_script_enabled=False
    )
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_without_javascript_the_form_posts_and_the_job_page_shows_each_state_on_reload(
    no_js_page: Page, screenshot: Screenshot, tmp_path: Path
) -> None:
    page = no_js_page
    with serve(tmp_path / "site", workers=0) as site:  # no executor: the job waits in the queue
        log_in(page, site, site.user("nojs"))

        # Every model's parameters are on the form; the server uses the chosen model's only.
        expect(page.locator(".hint")).to_be_visible()
        expect(page.locator('fieldset.params[data-model="veo3.1"]')).to_be_visible()
        fill_generate(page, "rain on a tin roof")
        page.fill("#param-camera_motion", "slow pan")  # veo3.1's: refused if wan2.1 were sent it
        screenshot(page, "generate-nojs")
        job_id = submit_generate(page, site)
        job = site.job(job_id)
        assert (job.model, job.status, job.prompt) == ("wan2.1", "queued", "rain on a tin roof")
        (parameters,) = job.parameters.values()
        assert {name: parameters[name] for name in TINY_WAN} == {k: int(v) for k, v in TINY_WAN.items()}
        assert "camera_motion" not in parameters

        # The page is rendered with the job's state: queued, with its place and a cancel button.
        expect(page.locator("#status-name")).to_have_text("Queued")
        expect(page.locator("#queue-position")).to_be_visible()
        expect(page.locator("#queue-position")).to_contain_text("0 job(s) ahead")
        expect(page.locator("#cancel-queued")).to_be_visible()
        expect(page.locator("#progress")).to_be_hidden()
        screenshot(page, "job-queued-nojs")

        # An executor takes it and reports progress: a reload shows it.
        with site.state.session_factory.begin() as session:
            assert jobs.claim(session, job_id, "browser-test", 600)
            assert jobs.record_progress(session, job_id, 40, "browser-test")
        page.reload()
        expect(page.locator("#status-name")).to_have_text("Processing")
        expect(page.locator("#progress")).to_be_visible()
        expect(page.locator("#progress-value")).to_have_text("40")
        expect(page.locator("#progress")).to_have_attribute("value", "40")
        expect(page.locator("#cancel-queued")).to_be_hidden()
        screenshot(page, "job-running-nojs")

        # Stopping it: without the script's confirm(), the server asks on a page of its own.
        page.locator("#cancel-running button[type=submit]").click()
        expect(page.locator("h1")).to_have_text("Stop this job?")
        page.click("text=Yes, stop it")
        expect(page).to_have_url(f"{site.url}/jobs/{job_id}")
        expect(page.locator("#status-name")).to_have_text("Cancelled")
        expect(page.locator("#cancel-running")).to_be_hidden()
        assert site.job(job_id).status == "cancelled"


OVERFLOWING = """([selector, width]) => {
    // Elements of `selector` that reach past `width`, unless a box that scrolls or clips holds them.
    const boxed = (el) => ['auto', 'scroll', 'hidden', 'clip'].includes(getComputedStyle(el).overflowX);
    const held = (el) => {
        for (let up = el.parentElement; up; up = up.parentElement) if (boxed(up)) return true;
        return false;
    };
    const right = (el) => el.getBoundingClientRect().right;
    return [...document.querySelectorAll(selector)]
        .filter((el) => right(el) > width + 0.5 && !held(el))
        .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className}: ${right(el)}`);
}"""


def content_overflow(page: Page) -> list[str]:
    found: list[str] = page.evaluate(OVERFLOWING, ["main, main *, footer, footer *", PHONE_WIDTH])
    return found


def test_generate_and_job_pages_fit_a_phone(
    phone_page: Page, console_errors: list[str], screenshot: Screenshot, wan_site: Site
) -> None:
    """Their content fits 390 px (the page as a whole: the test below)."""
    page, site = phone_page, wan_site
    log_in(page, site, site.user("phone"))
    assert content_overflow(page) == []
    screenshot(page, "generate-phone")

    fill_generate(page, "waves on a pebble beach")
    expect(page.locator("#preview")).to_be_visible()
    assert content_overflow(page) == []  # with the image preview too
    submit_generate(page, site)
    assert content_overflow(page) == []
    expect(page.locator("#job")).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    page.wait_for_function("() => document.getElementById('video').readyState >= 2", timeout=30_000)
    assert content_overflow(page) == []  # with the video and its metrics
    screenshot(page, "job-completed-phone")

    page.goto(f"{site.url}/history")
    assert content_overflow(page) == []
    assert_no_console_errors(console_errors, "phone pages")


def test_no_page_scrolls_sideways_on_a_phone(phone_page: Page, wan_site: Site) -> None:
    page, site = phone_page, wan_site
    email = site.user("narrow")
    job_id = httpx.post(
        f"{site.url}/api/v1/generate",
        headers={"X-API-Key": site.api_key(email)},
        data={"prompt": "a kite", "model": "wan2.1", **TINY_WAN},
        files={"image": ("still.png", image_bytes("PNG", (48, 32)), "image/png")},
        timeout=30,
    ).json()["job_id"]
    log_in(page, site, email)
    widths = {}
    for path in ("/generate", f"/jobs/{job_id}", "/history", "/account"):
        page.goto(f"{site.url}{path}")
        widths[path] = scroll_width(page)
    assert {path: width for path, width in widths.items() if width > PHONE_WIDTH} == {}


CONTROLS_AND_HEADINGS = """() => {
    const controls = [...document.querySelectorAll('input, select, textarea')]
        .filter((control) => control.type !== 'hidden');
    const unlabelled = controls
        .filter((control) => !control.labels || !control.labels.length
            || ![...control.labels].some((label) => label.textContent.trim()))
        .map((control) => control.outerHTML.slice(0, 120));
    return {controls: controls.length, unlabelled, h1: document.querySelectorAll('h1').length,
            lang: document.documentElement.lang, title: document.title};
}"""


def test_every_form_control_has_a_label_and_each_page_one_h1(page: Page, wan_site: Site) -> None:
    site = wan_site

    def check(path: str, min_controls: int) -> None:
        found: dict[str, Any] = page.evaluate(CONTROLS_AND_HEADINGS)
        assert found["unlabelled"] == [], f"{path}: {found['unlabelled']}"
        assert found["controls"] >= min_controls, f"{path}: {found}"
        assert found["h1"] == 1, f"{path}: {found}"
        assert found["lang"] == "en" and found["title"].endswith("Vivid Flow"), found

    page.goto(f"{site.url}/register")
    check("/register", 3)
    page.goto(f"{site.url}/login")
    check("/login", 2)
    log_in(page, site, site.user("labels"))
    check("/generate", 15)  # both models' parameters, the image, prompt and model
    page.goto(f"{site.url}/account")
    page.fill("#key-name", "labelled")
    page.locator("#create-key button[type=submit]").click()
    expect(page.locator("#new-key-secret")).to_be_visible()
    check("/account with a new key", 5)
    page.click("text=Show secret")
    expect(page.locator("#webhook-secret")).to_be_visible()
    check("/account with the webhook secret", 5)
