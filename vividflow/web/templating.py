"""Rendering pages: one Jinja2 environment (autoescaped), the headers every page carries, and the
visitor's cookie and CSRF token handed to every template."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from vividflow import __version__
from vividflow.apiserver.services.enhance import enhance_available
from vividflow.apiserver.sessions import CSRF_FIELD, Visitor
from vividflow.apiserver.state import AppState

WEB_DIR = Path(__file__).parent
STATIC_VERSION = __version__
"""Part of every static URL, so that a new release is fetched despite the long cache lifetime."""

environment = Environment(
    loader=FileSystemLoader(WEB_DIR / "templates"),
    autoescape=select_autoescape(("html",), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.strftime("%Y-%m-%d %H:%M UTC")


environment.filters["when"] = _when
environment.globals.update(csrf_field=CSRF_FIELD, static_version=STATIC_VERSION)


def content_security_policy(state: AppState) -> str:
    """Scripts and styles only from this server; videos also from the result store (https)."""
    public = state.session_keys.public_origin
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            f"media-src 'self' {public} https:",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def page_headers(state: AppState) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(state),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def render(
    request: Request,
    state: AppState,
    visitor: Visitor,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    values = {
        "request": request,
        "visitor": visitor,
        "user": visitor.user,
        "csrf_token": visitor.csrf_token,
        "enhance_available": enhance_available(state.settings),
        **(context or {}),
    }
    html = environment.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status_code, headers={**page_headers(state), **(headers or {})})
    remember_visitor(state, visitor, response)
    return response


def remember_visitor(state: AppState, visitor: Visitor, response: Response) -> None:
    if visitor.new_visitor_id is not None:
        state.session_keys.set_visitor(response, visitor.new_visitor_id)
