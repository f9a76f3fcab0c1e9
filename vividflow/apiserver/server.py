"""``vividflow serve``: uvicorn with bounded connections.

uvicorn bounds idle keep-alive connections and, with ``limit_concurrency``, how many connections and
requests it takes at once (503 beyond), but not how large or how slow a request's headers may be. The
protocol class here adds both to uvicorn's httptools protocol: the request line and headers may be at
most ``max_header_bytes`` (431 beyond) and must arrive within ``header_timeout_seconds`` of the
connection opening or the request starting (408, then the connection is closed). Body size and read
time are bounded in the application (:mod:`vividflow.apiserver.body_limits`).

Logging is :func:`vividflow.logs.uvicorn_log_config`: text or JSON lines, and the access log never
shows a secret (values of query parameters whose names look like credentials are replaced by
``REDACTED``, and every line is masked for anything that looks like a key or token).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from vividflow.apiserver.metrics import MULTIPROCESS_DIR_ENV
from vividflow.logs import configure_logging, uvicorn_log_config
from vividflow.settings import Settings


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that is refused."""


class CoalescingTransport(asyncio.Transport):
    """A connection's transport whose writes of one event-loop iteration leave in one ``send``.

    uvicorn writes a response's status line and headers, then its body, with a ``write`` each: two
    system calls and two TCP segments for the commonest, small response. Here writes are held until
    the end of the loop iteration (or until :data:`FLUSH_BYTES` are held) and then written as one,
    so a small response costs one of each; flow control stays the real transport's.
    """

    FLUSH_BYTES = 64 * 1024

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._held_bytes += len(data)
        if self._held_bytes >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._held:
            data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
            self._held.clear()
            self._held_bytes = 0
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held.clear()
        self._held_bytes = 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._held_bytes + self._transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size limit, a header read timeout and writes
    coalesced (:class:`CoalescingTransport`)."""

    max_header_bytes = 32 * 1024
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str, str] | None = None

    # -- the header timer: from connect (or a request's first byte) to the end of its headers --------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            detail = f"The request headers did not arrive within {self.header_timeout:g} seconds."
            self._send_refusal(408, "Request timeout", detail)

    # -- the header size ------------------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            detail = f"The request line and headers are larger than {self.max_header_bytes} bytes."
            self._refusal = (431, "Request headers too large", detail)
            raise _Refused

    def send_400_response(self, msg: str) -> None:
        """The parser stopped: for our own refusal, answer it instead of uvicorn's 400."""
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._send_refusal(*self._refusal)

    def _send_refusal(self, status: int, error: str, detail: str) -> None:
        self._disarm()
        body = json.dumps({"error": error, "details": [detail]}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with the limits of ``settings``."""
    return type(
        "VividFlowHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {"max_header_bytes": settings.max_header_bytes, "header_timeout": settings.header_timeout_seconds},
    )


def serve(settings: Settings, host: str, port: int) -> None:
    """uvicorn in this process, or with ``api_processes`` > 1 in that many worker processes (each
    makes its app from the environment's settings, as this process did)."""
    configure_logging(settings, "api")  # for what is logged before uvicorn applies its log_config
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": uvicorn_log_config(settings),
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keepalive_timeout_seconds,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        # asyncio's loop, not uvloop: uvloop accepts one connection per loop iteration, so under a
        # burst of new connections the last ones wait for their first answer (bench/api_load.py).
        "loop": "asyncio",
    }
    if settings.api_processes == 1:
        from vividflow.apiserver.app import create_app

        uvicorn.run(create_app(settings), http=guarded_protocol(settings), **options)
        return
    prepare_worker_processes(settings)
    uvicorn.run(
        "vividflow.apiserver.app:create_app",
        factory=True,
        workers=settings.api_processes,
        http=f"{__name__}:SettingsProtocol",
        **options,
    )


def prepare_worker_processes(settings: Settings) -> None:
    """Before uvicorn starts its worker processes: migrate the database once, here (not in every
    process at once), and give prometheus-client's multiprocess mode an empty directory."""
    if settings.migrate_on_start:
        from vividflow.apiserver.db.migrate import upgrade

        upgrade(settings.resolved_database_url)
        os.environ["VIVID_MIGRATE_ON_START"] = "false"
    metrics_dir = os.environ.get(MULTIPROCESS_DIR_ENV)
    if metrics_dir:  # a directory chosen by whoever runs the server: what earlier runs left is stale
        for stale in Path(metrics_dir).glob("*.db"):
            stale.unlink()
    else:
        os.environ[MULTIPROCESS_DIR_ENV] = tempfile.mkdtemp(prefix="vividflow-metrics-")


def __getattr__(name: str) -> Any:
    """``SettingsProtocol``: the protocol class with the environment's limits, for uvicorn's worker
    processes (which import it by name)."""
    if name == "SettingsProtocol":
        from vividflow.settings import get_settings

        return guarded_protocol(get_settings())
    raise AttributeError(name)
