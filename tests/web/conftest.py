"""Browser tests: Playwright's sync API driving the system Chromium (never Playwright's own download).

    def test_home(page: Page, console_errors: list[str], screenshot: Screenshot) -> None:
        page.goto(url)
        screenshot(page, "home")
        assert console_errors == []

Chromium: ``$VIVID_CHROMIUM``, else ``chromium`` on the PATH, else /usr/bin/chromium; `make test` sets
VIVID_CHROMIUM from ``bash scripts/browser.sh path``, which installs Debian's package when missing.
Screenshots go to ``$VIVID_SCREENSHOTS_DIR`` when set (`make screenshots`: docs/screenshots/), else to the
test's tmp_path.

Playwright's sync API runs an asyncio loop of its own in this (the main) thread, and between its calls
that loop counts as running here: ``asyncio.run()`` and ``anyio.run()`` fail in this thread while the
browser is open. Servers on threads (tests/served_app.py), the in-process TestClient (its own portal
thread) and httpx's sync client are unaffected; run other async code with the ``run_async`` fixture (a
worker thread). The Playwright driver is therefore package-scoped: it stops once the last test of
tests/web/ is done, so tests collected after these ones get a thread without that loop.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, sync_playwright

T = TypeVar("T")

DEFAULT_TIMEOUT_MS = 20_000
DESKTOP_VIEWPORT = {"width": 1280, "height": 900}
PHONE_VIEWPORT = {"width": 390, "height": 844}
CONTEXT_OPTIONS: dict[str, Any] = {"locale": "en-US", "timezone_id": "UTC"}
_SCREENSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def chromium_executable() -> str | None:
    """The Chromium to launch: $VIVID_CHROMIUM, ``chromium`` on the PATH or /usr/bin/chromium."""
    configured = os.environ.get("VIVID_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """One headless Chromium for all the browser tests."""
    executable = chromium_executable()
    if executable is None:
        configured = os.environ.get("VIVID_CHROMIUM")
        where = f"VIVID_CHROMIUM={configured} is not an executable" if configured else "no Chromium found"
        pytest.fail(
            f"{where}: run `bash scripts/browser.sh path` (installs Debian's chromium when missing) and "
            "set VIVID_CHROMIUM to the path it prints",
            pytrace=False,
        )
    browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def console_errors() -> list[str]:
    """What the pages of the test logged as errors: ``console.error`` messages (CSP violations, failed
    loads) and uncaught exceptions (``pageerror: ...``). Filled by ``page`` and ``phone_page``."""
    return []


def _new_context(browser: Browser, **options: Any) -> Iterator[BrowserContext]:
    context = browser.new_context(**CONTEXT_OPTIONS, **options)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


def _new_page(context: BrowserContext, errors: list[str]) -> Page:
    page = context.new_page()
    page.set_default_timeout(DEFAULT_TIMEOUT_MS)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url") or ""
            line = message.location.get("lineNumber")
            errors.append(f"console.error: {message.text}" + (f" ({where}:{line})" if where else ""))

    def on_page_error(error: Exception) -> None:
        errors.append(f"pageerror: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    # Also reachable from the page object itself: the very list of the console_errors fixture.
    page.console_errors = errors  # type: ignore[attr-defined]
    return page


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh desktop browser context (1280x900, en-US, UTC), closed after the test."""
    yield from _new_context(browser, viewport=DESKTOP_VIEWPORT)


@pytest.fixture
def page(context: BrowserContext, console_errors: list[str]) -> Page:
    """A page of ``context`` (default timeout 20 s) whose errors land in ``console_errors``."""
    return _new_page(context, console_errors)


@pytest.fixture
def phone_context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh phone-sized context (390x844, mobile, touch, scale 1 to keep screenshots small)."""
    yield from _new_context(
        browser, viewport=PHONE_VIEWPORT, is_mobile=True, has_touch=True, device_scale_factor=1
    )


@pytest.fixture
def phone_page(phone_context: BrowserContext, console_errors: list[str]) -> Page:
    """A page of ``phone_context``, like ``page``."""
    return _new_page(phone_context, console_errors)


class Screenshot(Protocol):
    def __call__(self, page: Page, name: str) -> Path: ...


@pytest.fixture
def screenshot(tmp_path: Path) -> Screenshot:
    """``screenshot(page, name)``: a full-page PNG ``<name>.png`` in $VIVID_SCREENSHOTS_DIR (else the
    test's tmp_path, also when unset meanwhile); its path."""

    def take(page: Page, name: str) -> Path:
        if not _SCREENSHOT_NAME.fullmatch(name):
            raise ValueError(f"screenshot name {name!r}: letters, digits, '.', '_' and '-' only")
        configured = os.environ.get("VIVID_SCREENSHOTS_DIR")
        directory = Path(configured) if configured else tmp_path
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


class RunAsync(Protocol):
    def __call__(self, func: Callable[..., Awaitable[T]], *args: Any) -> T: ...


@pytest.fixture
def run_async() -> RunAsync:
    """``run_async(async_fn, *args)``: ``anyio.run(async_fn, *args)`` on a worker thread, as this thread's
    loop belongs to Playwright; its result (or exception)."""
    import anyio

    def run(func: Callable[..., Awaitable[T]], *args: Any) -> T:
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["result"] = anyio.run(func, *args)
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=target, name="run-async", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]  # type: ignore[no-any-return]

    return run
