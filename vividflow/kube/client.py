"""A small synchronous Kubernetes client for plain-dict objects, on the ``kubernetes`` package's
``ApiClient`` (its auth, TLS and token refresh) without its model (de)serialisation."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client as k8s
from kubernetes.watch.watch import iter_resp_lines

from vividflow.kube.errors import KubeError, NotFound, error_for
from vividflow.kube.paths import MERGE_PATCH

Body = dict[str, Any]
"""A Kubernetes object as the API server answers it (the caller may change it)."""
Timeout = float | tuple[float, float]
"""Seconds for the whole request, or (connect, read)."""
OnError = Callable[[str, int | str], None]
"""Told of each failed request: (method, status code or "connection")."""


def _ignore(method: str, code: int | str) -> None:
    pass


class Kube:
    """Dict-in, dict-out API calls; thread-safe (one connection pool shared by all threads)."""

    def __init__(
        self,
        configuration: k8s.Configuration,
        *,
        timeout: Timeout = 30.0,
        pool_size: int = 16,
        on_error: OnError = _ignore,
    ) -> None:
        configuration.connection_pool_maxsize = pool_size
        self.configuration = configuration
        self._api = k8s.ApiClient(configuration)
        self._timeout = timeout
        self._on_error = on_error

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        query: dict[str, str] | None,
        content_type: str,
        timeout: Timeout,
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, body, _ = self._api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(method, url, headers, body, _request_timeout=timeout)
        except Exception:
            self._on_error(method, "connection")
            raise
        if response.status >= 400:
            data: bytes = response.read()  # type: ignore[no-untyped-call]
            if response.status != 404 or method != "GET":  # a GET of something gone is an answer
                self._on_error(method, response.status)
            try:
                status = json.loads(data)
                message, reason = str(status.get("message", "")), str(status.get("reason", ""))
            except (ValueError, AttributeError):
                message, reason = data.decode(errors="replace")[:500], ""
            raise error_for(response.status, message, reason)
        return response

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: Timeout | None = None,
    ) -> Body:
        """The answer's JSON object; raises a :class:`KubeError` subclass for an error status."""
        response = self._send(method, path, body, query, content_type, timeout or self._timeout)
        data: bytes = response.read()
        result: Body = json.loads(data) if data else {}
        return result

    def get(self, path: str) -> Body | None:
        """The object at ``path``, or None if there is none."""
        try:
            return self.request("GET", path)
        except NotFound:
            return None

    def list(self, path: str, selector: str = "", *, timeout: Timeout | None = None) -> Body:
        """The collection at ``path`` (its ``items`` and ``metadata.resourceVersion``)."""
        return self.request(
            "GET", path, query={"labelSelector": selector} if selector else None, timeout=timeout
        )

    def create(self, path: str, body: Any, *, timeout: Timeout | None = None) -> Body:
        return self.request("POST", path, body=body, timeout=timeout)

    def merge_patch(self, path: str, body: Any, *, timeout: Timeout | None = None) -> Body:
        return self.request("PATCH", path, body=body, content_type=MERGE_PATCH, timeout=timeout)

    def delete(self, path: str, propagation: str = "Background") -> bool:
        """Delete the object at ``path`` (and, by default, its dependents); False if it was gone."""
        try:
            self.request("DELETE", path, body={"propagationPolicy": propagation})
        except NotFound:
            return False
        return True

    @contextlib.contextmanager
    def stream(self, path: str, query: dict[str, str], *, timeout: Timeout) -> Iterator[Stream]:
        """A watch request's lines of JSON, as they come; closed on leaving the block."""
        response = self._send("GET", path, None, query, "application/json", timeout)
        stream = Stream(response.response)
        try:
            yield stream
        finally:
            stream.close()


class Stream:
    """The lines of a streamed answer; :meth:`abort` unblocks a thread that reads them."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def lines(self) -> Iterator[str]:
        lines: Iterator[str] = iter_resp_lines(self._response)  # type: ignore[no-untyped-call]
        return lines

    def abort(self) -> None:
        """Shut the socket down (closing alone can wait on the SSL lock of the reading thread)."""
        sock = getattr(getattr(self._response, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._response.close()
        self._response.release_conn()


__all__ = ["Body", "Kube", "KubeError", "Stream"]
