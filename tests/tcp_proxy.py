"""A loopback TCP forwarder in front of a server, for tests that need the network to fail: it
forwards bytes both ways (TLS passes through untouched), records the first bytes each client
connection sent (its request head), and can drop every open connection (:meth:`TcpProxy.sever`) or
also refuse new ones until :meth:`TcpProxy.restore` (:meth:`TcpProxy.cut`), as when a server restarts
or the network fails.

    with TcpProxy(upstream_port) as proxy:
        httpx.get(proxy.url + "/healthz")
        proxy.sever()
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

HEAD_BYTES = 4096
"""How much of each connection's first bytes is kept in ``requests``."""


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, scheme: str = "http") -> None:
        self._target = (target_host, target_port)
        self._scheme = scheme
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._condition = threading.Condition()
        self._sockets: set[socket.socket] = set()
        self.accepted = 0
        self.requests: list[bytes] = []
        """The first bytes each client connection sent, in order of connection."""
        threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    def sever(self) -> None:
        """Drop every open connection, both ways (new ones still get through)."""
        with self._condition:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def cut(self) -> None:
        """Drop every connection and refuse new ones until :meth:`restore`."""
        self._open.clear()
        self.sever()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.cut()
        _close(self._listener)

    def wait_for(self, predicate: Callable[[list[bytes]], bool], timeout: float = 30.0) -> None:
        """Wait until ``predicate(requests)`` holds."""
        with self._condition:
            if not self._condition.wait_for(lambda: predicate(self.requests), timeout):
                raise AssertionError(f"proxy: condition not met within {timeout} s; saw {self.requests!r}")

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._condition:
                self.accepted += 1
                self._sockets.update((client, upstream))
                index = len(self.requests)
                self.requests.append(b"")
            threading.Thread(target=self._pump, args=(client, upstream, index), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, index: int | None) -> None:
        try:
            while data := source.recv(65536):
                if index is not None:
                    with self._condition:
                        if len(self.requests[index]) < HEAD_BYTES:
                            self.requests[index] += data
                        self._condition.notify_all()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with self._condition:
                    self._sockets.discard(sock)
                _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
