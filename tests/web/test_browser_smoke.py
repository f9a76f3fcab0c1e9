"""The browser-test setup itself: Chromium starts, runs scripts, applies the vendored Pico CSS under a
strict Content-Security-Policy and reports console errors; the vendored data files load."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest
from playwright.sync_api import Page

from tests.web.conftest import RunAsync, Screenshot

WEB = Path(__file__).resolve().parents[2] / "vividflow" / "web"
PICO = WEB / "static" / "vendor" / "pico.min.css"
COMMON_PASSWORDS = WEB / "data" / "common-passwords.txt"

# What the web app is expected to send; Pico's form controls use data: SVG images. Without a
# <link rel="icon"> Chromium asks for /favicon.ico (a 404 is a console error); without the viewport
# <meta> a phone lays the page out 980 px wide.
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

PAGES: dict[str, tuple[str, bytes]] = {
    "/": (
        "text/html; charset=utf-8",
        b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>smoke</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/vendor/pico.min.css"></head>
<body><main class="container"><h1 id="greeting">static</h1>
<form><select><option>one</option></select><label><input type="checkbox" checked> tick</label>
<button type="button">Go</button></form></main>
<script src="/app.js"></script></body></html>""",
    ),
    "/app.js": (
        "text/javascript",
        b"document.getElementById('greeting').textContent = 'hello from script';",
    ),
    "/broken": (
        "text/html; charset=utf-8",
        b"""<!doctype html><html lang="en"><head><title>broken</title></head><body>
<script>document.title = 'inline ran';</script><script src="/boom.js"></script></body></html>""",
    ),
    "/boom.js": ("text/javascript", b"throw new Error('boom from boom.js');"),
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/static/vendor/pico.min.css":
            content_type, body = "text/css", PICO.read_bytes()
        elif self.path in PAGES:
            content_type, body = PAGES[self.path]
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="smoke-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_chromium_runs_scripts_and_applies_pico_under_csp(
    page: Page,
    console_errors: list[str],
    screenshot: Screenshot,
    site: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The smoke test's own screenshots stay out of docs/screenshots/ (`make screenshots`).
    monkeypatch.setenv("VIVID_SCREENSHOTS_DIR", str(tmp_path / "shots"))
    page.goto(f"{site}/")

    assert page.locator("#greeting").text_content() == "hello from script"
    styles = page.evaluate(
        """() => {
            const root = getComputedStyle(document.documentElement);
            const body = getComputedStyle(document.body);
            return {
                sansSerif: root.getPropertyValue('--pico-font-family-sans-serif'),
                bodyFont: body.fontFamily,
                bodyMargin: body.margin,
                buttonBackground: getComputedStyle(document.querySelector('button')).backgroundColor,
                primaryBackground: root.getPropertyValue('--pico-primary-background').trim(),
            };
        }"""
    )
    assert "system-ui" in styles["sansSerif"]
    assert "system-ui" in styles["bodyFont"]
    assert styles["bodyMargin"] == "0px"  # the browser's own default is 8px
    assert styles["primaryBackground"]
    assert styles["buttonBackground"] not in ("", "rgba(0, 0, 0, 0)", "rgb(239, 239, 239)")
    assert page.viewport_size == {"width": 1280, "height": 900}
    assert page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == "UTC"
    assert page.evaluate("navigator.language") == "en-US"

    shot = screenshot(page, "smoke-desktop")
    assert shot == tmp_path / "shots" / "smoke-desktop.png"
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert console_errors == []
    assert page.console_errors is console_errors  # type: ignore[attr-defined]


def test_console_errors_catch_csp_violations_and_uncaught_exceptions(
    page: Page, console_errors: list[str], site: str
) -> None:
    page.goto(f"{site}/broken")
    page.wait_for_function("() => true")  # lets the page's errors arrive

    assert page.title() == "broken"  # the inline script was refused
    assert any("Content Security Policy" in error for error in console_errors), console_errors
    assert any(error.startswith("pageerror:") and "boom from boom.js" in error for error in console_errors)


def test_phone_page_and_async_code_beside_the_browser(
    phone_page: Page,
    console_errors: list[str],
    screenshot: Screenshot,
    run_async: RunAsync,
    site: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VIVID_SCREENSHOTS_DIR", raising=False)
    phone_page.goto(f"{site}/")
    assert phone_page.evaluate("window.innerWidth") == 390
    shot = screenshot(phone_page, "smoke-phone")
    assert shot.parent == tmp_path and shot.stat().st_size > 0

    async def sleep_then(value: str) -> str:
        await anyio.sleep(0)
        return value

    # This thread's asyncio loop is Playwright's: async code runs on a worker thread instead.
    assert run_async(sleep_then, "ran") == "ran"
    assert phone_page.locator("#greeting").text_content() == "hello from script"
    assert console_errors == []


def test_common_passwords_list_loads() -> None:
    passwords = COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()

    assert len(passwords) >= 10_000
    assert passwords[:2] == ["123456", "password"]  # frequency order
    assert {"password", "password123", "qwertyuiop", "1234567890"} <= set(passwords)
    assert all(p and p == p.strip() and p == p.lower() for p in passwords)
    assert len(set(passwords)) == len(passwords)
