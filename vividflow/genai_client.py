"""The one place that builds a google-genai client for Vertex AI (Veo and prompt enhancement).

Two ways to authenticate, from the settings:

- express mode: ``VIVID_VERTEX_API_KEY`` alone (project and location are not sent);
- project mode: ``VIVID_VERTEX_PROJECT`` (and ``VIVID_VERTEX_LOCATION``) with ``credentials`` or, by
  default, application default credentials, resolved here so that a missing setup fails when the
  client is built instead of at its first request.

``VIVID_VERTEX_BASE_URL`` points either mode at another endpoint (the tests' fake Vertex AI).
"""

from __future__ import annotations

import importlib

import google.auth
from google import genai
from google.auth.credentials import Credentials
from google.auth.exceptions import GoogleAuthError
from google.genai import types

from vividflow.settings import Settings

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TIMEOUT_MS = 120_000
_MESSAGE_LIMIT = 500

NOT_CONFIGURED = "set VIVID_VERTEX_PROJECT (with application default credentials) or VIVID_VERTEX_API_KEY"


class VertexClientError(Exception):
    """The Vertex AI client cannot be built; ``message`` is one line, free of secrets."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class VertexNotConfigured(VertexClientError):
    """Neither an API key nor a project is configured."""

    def __init__(self) -> None:
        super().__init__(f"Vertex AI is not configured: {NOT_CONFIGURED}")


class VertexCredentialsMissing(VertexClientError):
    """Project mode, but no Google Cloud credentials were found."""


def _short(text: object) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _MESSAGE_LIMIT else flat[: _MESSAGE_LIMIT - 1] + "…"


def _api_key(settings: Settings) -> str | None:
    key = settings.vertex_api_key.get_secret_value() if settings.vertex_api_key is not None else ""
    return key or None


def vertex_configured(settings: Settings) -> bool:
    """Whether the settings name a way to reach Vertex AI (cheap: no credentials are looked up)."""
    return _api_key(settings) is not None or bool(settings.vertex_project)


def default_credentials() -> Credentials:
    """Application default credentials with the cloud-platform scope (raises GoogleAuthError)."""
    credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return credentials


def make_vertex_client(
    settings: Settings,
    *,
    credentials: Credentials | None = None,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> genai.Client:
    """A Vertex AI client whose every HTTP request is bounded by ``timeout_ms``; no SDK retries.

    Raises :class:`VertexNotConfigured` without a key or project, :class:`VertexCredentialsMissing`
    when project mode finds no credentials, and :class:`VertexClientError` when the SDK refuses the
    configuration. Messages never contain the key.
    """
    http_options = types.HttpOptions(timeout=timeout_ms)
    if settings.vertex_base_url:
        http_options.base_url = settings.vertex_base_url
    api_key = _api_key(settings)
    try:
        if api_key is not None:
            return genai.Client(vertexai=True, api_key=api_key, http_options=http_options)
        if not settings.vertex_project:
            raise VertexNotConfigured()
        return genai.Client(
            vertexai=True,
            project=settings.vertex_project,
            location=settings.vertex_location,
            credentials=credentials if credentials is not None else default_credentials(),
            http_options=http_options,
        )
    except GoogleAuthError as exc:
        raise VertexCredentialsMissing(f"No Google Cloud credentials for Vertex AI: {_short(exc)}") from None
    except ValueError as exc:
        raise VertexClientError(
            f"Could not set up the Vertex AI client: {_short(_redact(exc, api_key))}"
        ) from None


def _redact(exc: Exception, secret: str | None) -> str:
    text = str(exc)
    return text.replace(secret, "***") if secret else text


def _sdk_exceptions(attribute: str) -> list[type[Exception]]:
    """``attribute`` of the SDK's HTTP clients: httpx, or its fork httpx2 when installed."""
    found: list[type[Exception]] = []
    for module in ("httpx", "httpx2"):
        try:
            found.append(importlib.import_module(module).__dict__[attribute])
        except (ImportError, KeyError):
            continue
    return found


SDK_NETWORK_ERRORS: tuple[type[Exception], ...] = tuple(_sdk_exceptions("HTTPError"))
"""Transport errors of google-genai's HTTP client."""
SDK_TIMEOUT_ERRORS: tuple[type[Exception], ...] = tuple(_sdk_exceptions("TimeoutException"))
