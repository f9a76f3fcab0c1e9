"""Driving the web app's forms over HTTP (Starlette's TestClient or any httpx client): read a
page's CSRF token, post its forms, register and log in."""

from __future__ import annotations

import re
from typing import Any

import httpx

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "violet-harbour-lantern"


def csrf_token(page: httpx.Response) -> str:
    match = _CSRF.search(page.text)
    assert match, f"no CSRF token on {page.url}"
    return match.group(1)


def post_form(
    client: httpx.Client, page_path: str, action: str, data: dict[str, Any], **kwargs: Any
) -> httpx.Response:
    """Open ``page_path`` (as a browser would, for its token), then post ``data`` to ``action``."""
    token = csrf_token(client.get(page_path))
    return client.post(action, data={"csrf_token": token, **data}, follow_redirects=False, **kwargs)


def register(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return post_form(
        client, "/register", "/register", {"email": email, "password": password, "password_confirm": password}
    )


def log_in(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return post_form(client, "/login", "/login", {"email": email, "password": password})


def signed_up(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Client:
    assert register(client, email, password).status_code == 303
    answer = log_in(client, email, password)
    assert answer.status_code == 303, answer.text
    return client


def visible_text(page: httpx.Response) -> str:
    """The page without its tags and tokens: what a person reads."""
    text = re.sub(r"<[^>]+>", " ", _CSRF.sub("", page.text))
    return re.sub(r"\s+", " ", text).strip()
