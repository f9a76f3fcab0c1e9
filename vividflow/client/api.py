"""A small httpx client of the public API (``/api/v1``); every failure is an :class:`ApiError`."""

from __future__ import annotations

import contextlib
import mimetypes
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urljoin, urlsplit

import httpx
from httpx_sse import EventSource, connect_sse

from vividflow import __version__

TIMEOUT = httpx.Timeout(30.0, read=120.0)
STREAM_READ_TIMEOUT = 60.0
"""A status stream that sends nothing for this long (four missed heartbeats) counts as dropped."""
DOWNLOAD_CHUNK = 1024 * 1024

Body = dict[str, Any]


class ApiError(Exception):
    """An answer in the API's error shape (``{"error", "details"}``), or a request that got no answer
    (``status_code`` is None)."""

    def __init__(
        self,
        status_code: int | None,
        error: str,
        details: list[str] | None = None,
        *,
        body: Body | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.error = error
        self.details = details or []
        self.body = body
        """The server's JSON, when it sent some."""
        self.retry_after = retry_after

    @property
    def is_client_error(self) -> bool:
        return self.status_code is not None and 400 <= self.status_code < 500

    @property
    def is_transient(self) -> bool:
        """Worth trying again: no answer, a 5xx, or a 429."""
        return self.status_code is None or self.status_code == 429 or self.status_code >= 500

    @classmethod
    def of_response(cls, response: httpx.Response) -> ApiError:
        """The error a (read) error response describes, whatever its body."""
        retry_after = _seconds(response.headers.get("Retry-After"))
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            details = body.get("details")
            if isinstance(details, str):
                details = [details]
            elif not isinstance(details, list):
                details = []
            retry_after = _seconds(body.get("retry_after")) or retry_after
            return cls(
                response.status_code,
                body["error"],
                [str(d) for d in details],
                body=body,
                retry_after=retry_after,
            )
        text = response.text.strip()
        details = [text[:300]] if text else []
        error = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        return cls(
            response.status_code,
            error,
            details,
            body=body if isinstance(body, dict) else None,
            retry_after=retry_after,
        )

    @classmethod
    def unreachable(cls, url: str, error: Exception) -> ApiError:
        return cls(None, f"No answer from {url}", [str(error) or type(error).__name__])


def api_base(url: str) -> str:
    """The API root for a server URL: ``http://host:8000`` and ``http://host:8000/api/v1`` both give
    ``http://host:8000/api/v1``."""
    base = url.rstrip("/")
    return base if base.endswith("/api/v1") else f"{base}/api/v1"


class ApiClient:
    """The public API of one server, as one user (their API key)."""

    def __init__(self, url: str, api_key: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.base = api_base(url)
        agent = {"User-Agent": f"vividflow-cli/{__version__}"}
        self._http = httpx.Client(
            headers={**agent, "X-API-Key": api_key}, timeout=TIMEOUT, transport=transport
        )
        # Result URLs need no key and may be on another host (a bucket): never send it there.
        self._downloads = httpx.Client(headers=agent, timeout=TIMEOUT, follow_redirects=True)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._downloads.close()

    def url(self, *parts: str) -> str:
        return "/".join([self.base, *(quote(part, safe="") for part in parts)])

    def generate(
        self, prompt: str, fields: dict[str, str], *, image: Path | None = None, image_url: str | None = None
    ) -> Body:
        """Submit a job (``POST /generate``): an uploaded ``image`` or an ``image_url``; the 202 body."""
        data = {"prompt": prompt, **fields}
        if image is None:
            return self._json("POST", self.url("generate"), data={**data, "image_url": image_url or ""})
        content_type = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
        with image.open("rb") as file:
            return self._json(
                "POST", self.url("generate"), data=data, files={"image": (image.name, file, content_type)}
            )

    def status(self, job_id: str) -> Body:
        return self._json("GET", self.url("status", job_id))

    def cancel(self, job_id: str, *, running: bool = False) -> Body:
        params = {"running": "true"} if running else None
        return self._json("POST", self.url("cancel", job_id), params=params)

    def history(self, limit: int | None = None) -> Body:
        return self._json("GET", self.url("history"), params=None if limit is None else {"limit": limit})

    @contextlib.contextmanager
    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[EventSource]:
        """The job's status stream, opened (its response may be an error: check ``status_code``)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        timeout = httpx.Timeout(30.0, read=STREAM_READ_TIMEOUT)
        with connect_sse(
            self._http, "GET", self.url("status", job_id, "events"), headers=headers, timeout=timeout
        ) as source:
            yield source

    def download(self, result_url: str, destination: Path) -> int:
        """Stream the video at ``result_url`` into ``destination`` (a temporary file beside it, renamed
        once complete); the bytes written."""
        url = urljoin(self.base + "/", result_url)
        if urlsplit(url).scheme not in ("http", "https"):
            raise ApiError(
                None, f"Cannot download {result_url}", ["Only http(s) result URLs can be fetched."]
            )
        temporary: str | None = None
        try:
            fd, temporary = tempfile.mkstemp(
                dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
            )
            with os.fdopen(fd, "wb") as file:
                written = self._fetch_into(url, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, destination)
            return written
        except httpx.HTTPError as error:
            raise ApiError.unreachable(url, error) from error
        except OSError as error:
            raise ApiError(None, f"Cannot write {destination}", [str(error)]) from error
        finally:
            if temporary is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)

    def _fetch_into(self, url: str, file: BinaryIO) -> int:
        with self._downloads.stream("GET", url) as response:
            raise_for_error(response)
            written = 0
            for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                file.write(chunk)
                written += len(chunk)
            return written

    def _json(self, method: str, url: str, **kwargs: Any) -> Body:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise ApiError.unreachable(self.base, error) from error
        if response.is_error:
            raise ApiError.of_response(response)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(response.status_code, "The server's answer is not a JSON object", [url])
        return body


def raise_for_error(response: httpx.Response) -> None:
    """Raise the :class:`ApiError` of an error response (a streamed one is read first)."""
    if response.is_error:
        response.read()
        raise ApiError.of_response(response)


def _seconds(value: object) -> float | None:
    """A non-negative number of seconds from a header or body field, else None."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
