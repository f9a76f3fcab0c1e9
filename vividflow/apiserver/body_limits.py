"""Bounds on request bodies, enforced while they are read, whatever the framing (``Content-Length`` or
chunked) and whatever the content type.

A pure ASGI middleware wraps ``receive``: it counts the bytes as they arrive and raises
:class:`BodyTooLarge` (413) at the first chunk past the limit, so nothing beyond it is buffered, parsed
or spooled to disk; and it waits at most ``idle_timeout`` for each next chunk and ``total_timeout`` for
the whole body (:class:`BodyTimeout`, 408), so a slow client cannot hold a request open. Both errors ask
for the connection to be closed. A body announced larger than the limit is refused before any of it is
read. Multipart uploads to ``upload_paths`` get the image limit; every other body the small one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vividflow.apiserver.errors import ApiError

UPLOAD_SLACK_BYTES = 64 * 1024
"""Room for the form fields and multipart framing around an image of the largest size."""
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
CLOSE = {"Connection": "close"}


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "Request too large",
            [f"The request body is larger than the limit of {limit} bytes."],
            headers=CLOSE,
        )


class BodyTimeout(ApiError):
    def __init__(self, idle: float, total: float) -> None:
        super().__init__(
            408,
            "Request timeout",
            [
                f"The request body did not arrive in time: at most {idle:g} seconds may pass without "
                f"data, and {total:g} seconds in all."
            ],
            headers=CLOSE,
        )


class BodyGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        max_upload_bytes: int,
        upload_paths: Collection[str],
        idle_timeout: float,
        total_timeout: float,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes + UPLOAD_SLACK_BYTES
        self.upload_paths = frozenset(upload_paths)
        self.idle_timeout = idle_timeout
        self.total_timeout = total_timeout

    def limit_for(self, scope: Scope, headers: dict[bytes, bytes]) -> int:
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type == b"multipart/form-data" and scope["path"] in self.upload_paths:
            return self.max_upload_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        has_body = b"content-length" in headers or b"transfer-encoding" in headers
        if not has_body and scope["method"] in _BODYLESS_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope, headers)
        announced = headers.get(b"content-length", b"")
        if announced.isdigit() and int(announced) > limit:
            error = BodyTooLarge(limit)
            await JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)(
                scope, receive, send
            )
            return
        await self.app(scope, _GuardedReceive(receive, limit, self.idle_timeout, self.total_timeout), send)


class _GuardedReceive:
    """``receive`` that counts body bytes and times each wait while the body is incomplete."""

    def __init__(self, receive: Receive, limit: int, idle_timeout: float, total_timeout: float) -> None:
        self._receive = receive
        self._limit = limit
        self._idle = idle_timeout
        self._total = total_timeout
        self._deadline = asyncio.get_running_loop().time() + total_timeout
        self._received = 0
        self._complete = False

    async def __call__(self) -> Message:
        if self._complete:  # later calls wait for a disconnect: no limit applies
            return await self._receive()
        left = self._deadline - asyncio.get_running_loop().time()
        wait = min(self._idle, left)
        try:
            if wait <= 0:
                raise TimeoutError
            async with asyncio.timeout(wait):
                message = await self._receive()
        except TimeoutError:
            raise BodyTimeout(self._idle, self._total) from None
        if message["type"] != "http.request":
            self._complete = True
            return message
        self._received += len(message.get("body", b""))
        if self._received > self._limit:
            raise BodyTooLarge(self._limit)
        if not message.get("more_body", False):
            self._complete = True
        return message
