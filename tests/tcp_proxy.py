"""A TCP proxy on a loopback port in front of a server, for tests that need a connection to drop: it
forwards bytes both ways, records what each client connection sent first (its request head), and
``sever()`` cuts every open connection as a failing network would.

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

from tests.ports import free_port


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._condition = threading.Condition()
        self._open: set[socket.socket] = set()
        self.requests: list[bytes] = []
        """The first bytes each client connection sent, in order of connection."""
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting connections and cut the open ones."""
        with self._condition:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.sever()
        self._thread.join(timeout=10)

    def sever(self) -> None:
        """Cut every open connection, both ways."""
        with self._condition:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def wait_for(self, predicate: Callable[[list[bytes]], bool], timeout: float = 30.0) -> None:
        """Wait until ``predicate(requests)`` holds."""
        with self._condition:
            if not self._condition.wait_for(lambda: predicate(self.requests), timeout):
                raise AssertionError(f"proxy: condition not met within {timeout} s; saw {self.requests!r}")

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._condition:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
                index = len(self.requests)
                self.requests.append(b"")
            threading.Thread(target=self._pump, args=(client, upstream, index), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, index: int | None) -> None:
        try:
            while chunk := source.recv(65536):
                if index is not None:
                    with self._condition:
                        if len(self.requests[index]) < 4096:
                            self.requests[index] += chunk
                        self._condition.notify_all()
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
