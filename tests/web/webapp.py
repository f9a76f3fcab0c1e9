"""The real web app for the browser tests: served by uvicorn on a thread (``public_url`` is its own
URL, so result videos play), on a fresh migrated SQLite database, and the steps the tests share.

    with serve(tmp_path / "site", workers=1, wan_model=str(tiny_wan_model_dir)) as site:
        log_in(page, site, site.user("ann"))

Log-in and registration limits are raised (``1000/minute``) so that the tests of one module, all
from 127.0.0.1, do not run into them; the throttle test serves its own app with the default.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import FilePayload, Page, expect

from tests.api.conftest import image_bytes
from tests.ports import free_port
from tests.served_app import served_app
from vividflow.apiserver.app import create_app
from vividflow.apiserver.db.migrate import upgrade
from vividflow.apiserver.db.models import Job
from vividflow.apiserver.services import accounts, jobs, keys
from vividflow.apiserver.state import AppState
from vividflow.settings import Settings

PASSWORD = "violet kettle harbour 42"
TINY_WAN = {"width": "32", "height": "32", "length": "5", "steps": "2", "seed": "7"}
"""The tiny Wan pipeline's parameters, as typed into the form: a video in a second or two on a CPU."""
JOB_TIMEOUT_MS = 120_000
"""How long a tiny Wan job may take to complete, on a small machine under load."""
HIGH_AUTH_LIMITS = ["1000/minute"]


def unique_email(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}@example.com"


@dataclass
class Site:
    url: str
    state: AppState
    settings: Settings

    def user(self, name: str, password: str = PASSWORD) -> str:
        """A new account (made directly, as registering is tested elsewhere); its email."""
        email = unique_email(name)
        with self.state.session_factory.begin() as session:
            assert accounts.register(session, email, password).created
        return email

    def api_key(self, email: str, name: str = "test") -> str:
        with self.state.session_factory.begin() as session:
            return keys.create_key(session, keys.get_or_create_user(session, email), name).secret

    def job(self, job_id: str) -> Job:
        with self.state.session_factory() as session:
            job = jobs.get_job(session, job_id)
            assert job is not None, job_id
            session.expunge(job)
            return job

    def key_names(self, email: str, *, active: bool = False) -> list[str]:
        """The names of the user's keys (revoked ones too, unless ``active``)."""
        with self.state.session_factory() as session:
            user = accounts.find_user(session, email)
            assert user is not None, email
            found = keys.list_keys(session, user.id)
            return [key.name for key in found if not (active and key.revoked_at is not None)]


@contextmanager
def serve(directory: Path, **overrides: Any) -> Iterator[Site]:
    """The web app on a free port, its database and files under ``directory``; no executor unless
    ``workers=`` says so (jobs stay queued)."""
    directory.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{directory / 'vividflow.db'}"
    upgrade(database_url)
    port = free_port()
    values: dict[str, Any] = {
        "data_dir": directory / "data",
        "database_url": database_url,
        "workers": 0,
        "migrate_on_start": False,
        "public_url": f"http://127.0.0.1:{port}",
        "web_auth_limits": HIGH_AUTH_LIMITS,
        **overrides,
    }
    settings = Settings(**values)
    app = create_app(settings)
    with served_app(app, port=port) as url:
        yield Site(url, app.state.vivid, settings)


def path_of(page: Page, site: Site) -> str:
    """The page's URL without the site: ``/login?next=...``."""
    assert page.url.startswith(site.url), page.url
    return page.url[len(site.url) :]


def log_in(page: Page, site: Site, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{site.url}/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.locator("#login-form button[type=submit]").click()
    expect(page).to_have_url(f"{site.url}/generate")


def choose_image(page: Page, size: tuple[int, int] = (48, 32)) -> None:
    still: FilePayload = {"name": "still.png", "mimeType": "image/png", "buffer": image_bytes("PNG", size)}
    page.set_input_files("#image", files=[still])


def fill_generate(page: Page, prompt: str, params: dict[str, str] | None = None) -> None:
    """On /generate: upload a still, write the prompt, keep wan2.1 and type its parameters."""
    page.check('input[name="image_source"][value="upload"]')
    choose_image(page)
    page.fill("#prompt", prompt)
    page.select_option("#model", "wan2.1")
    for name, value in (params if params is not None else TINY_WAN).items():
        page.fill(f"#param-{name}", value)


def submit_generate(page: Page, site: Site) -> str:
    """Submit the generate form; the new job's id (from the job page it leads to)."""
    page.click("#submit")
    expect(page).to_have_url(re.compile(re.escape(f"{site.url}/jobs/") + r"[0-9a-f-]{36}$"))
    return job_id_of(page, site)


def job_id_of(page: Page, site: Site) -> str:
    path = path_of(page, site)
    assert path.startswith("/jobs/"), path
    return path.removeprefix("/jobs/")


def visible_text(page: Page) -> str:
    """What the page's main part says (the footer carries the version, the same everywhere)."""
    return page.locator("main").inner_text()


def scroll_width(page: Page) -> int:
    width: int = page.evaluate("() => document.documentElement.scrollWidth")
    return width


_FAILED_DOCUMENT = re.compile(
    r"console\.error: Failed to load resource: the server responded with a status of \d{3} "
    r".*\((?P<url>[^()]*):0\)"
)


def assert_no_console_errors(console_errors: list[str], where: str, *refused_urls: str) -> None:
    """None of the ``console_errors`` fixture's entries, except Chromium's note that one of
    ``refused_urls`` (an error page the test asked for: 400, 403, 429) answered with an error status."""
    unexpected = [
        error
        for error in console_errors
        if not ((found := _FAILED_DOCUMENT.fullmatch(error)) and found["url"] in refused_urls)
    ]
    assert unexpected == [], f"{where}: {unexpected}"


def wait_for_early_in_a_window(window_seconds: int, room: float) -> None:
    """Wait until at least ``room`` seconds are left of the rate limiter's current window (the
    ``limits`` library's windows start at multiples of ``window_seconds`` since the epoch)."""
    deadline = time.monotonic() + window_seconds
    while window_seconds - time.time() % window_seconds < room:
        assert time.monotonic() < deadline, "the clock did not move on"
        time.sleep(0.2)
