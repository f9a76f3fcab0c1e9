"""Errors of the storage layer, each with a ``message`` that is safe to show the user who sent the input.

Messages name what went wrong and, where useful, the input without its secrets (see :func:`safe_url`):
never credentials, query strings or tokens.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MB = 1024 * 1024


class StorageError(Exception):
    """Base class: reading an input or writing an output failed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(StorageError):
    """The input is not a PNG, JPEG or WebP image that decodes completely."""


class InputTooLarge(StorageError):
    """The input exceeds the size limit."""

    @classmethod
    def of(cls, limit: int, size: int | None = None) -> InputTooLarge:
        """The error for ``size`` bytes (``None``: unknown, only that it is over) against ``limit``."""
        if size is None:
            return cls(f"image is larger than the limit of {format_mb(limit)}")
        shown, limit_shown = format_mb(size), format_mb(limit)
        if shown == limit_shown:  # just over the limit: megabytes would read "20 MB; the limit is 20 MB"
            shown, limit_shown = f"{size} bytes", f"{limit} bytes"
        return cls(f"image is {shown}; the limit is {limit_shown}")


class InputNotFound(StorageError):
    """The input does not exist."""


class InputUnreachable(StorageError):
    """The input could not be read: a timeout, a connection error or an HTTP error."""


class FetchRefused(StorageError):
    """The URL is not allowed: a scheme other than https, a private address, too many redirects."""


class StorageAccessDenied(StorageError):
    """Our credentials may not read or write the object, or are missing."""


def format_mb(size: int) -> str:
    """``26528972`` -> ``"25.3 MB"``, ``20 * MB`` -> ``"20 MB"``."""
    return f"{size / MB:.1f}".removesuffix(".0") + " MB"


def safe_url(url: str) -> str:
    """The URL without user info, query string or fragment, for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
