"""Follow the VideoJobs of one namespace and hand every object seen to a callback.

The informer pattern of client-go, reduced to what a status mirror needs: list, then watch from the
list's resourceVersion; when a watch ends (its ``timeoutSeconds``, a dropped connection, a read
timeout) watch again from the last version seen (events and bookmarks advance it); when the server
answers 410 Gone ("too old resource version") list again. Every event carries the whole object, and
a list hands over every object again, so a consumer that applies the full status each time is
level-based and misses no transition across reconnects and relists. Deletions are handed over too:
a DELETED event carries the object's last state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from vividflow.jobspec import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

OnObject = Callable[[dict[str, Any], bool], None]
"""Called with each VideoJob seen and whether it was just deleted."""

CONNECT_TIMEOUT_SECONDS = 5.0
READ_GRACE_SECONDS = 15.0
"""A watch whose server-side timeout passed this long ago without an answer is dead: reconnect."""
MIN_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 0.2, 10.0


class ResourceExpired(Exception):
    """The watch's resourceVersion is older than the server keeps (410 Gone): list again."""


class VideoJobMirror:
    """A thread that lists and watches VideoJobs matching ``label_selector``.

    ``healthy`` is true while the last list or watch request succeeded. The counters (``lists``,
    ``watches``, ``expired``) are for logs and tests.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        on_object: OnObject,
        *,
        label_selector: str,
        watch_timeout_seconds: int = 240,
    ) -> None:
        self._api = client.CustomObjectsApi(api_client)
        self._namespace = namespace
        self._on_object = on_object
        self._selector = label_selector
        self._watch_timeout = watch_timeout_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self.healthy = False
        self.resource_version: str | None = None
        self.lists = self.watches = self.expired = 0

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="vividflow-videojob-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._abort_response()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.healthy = False

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = MIN_BACKOFF_SECONDS
        while not self._stopping.is_set():
            try:
                if self.resource_version is None:
                    self.resource_version = self._list()
                self._watch()
                backoff = MIN_BACKOFF_SECONDS
            except ResourceExpired:
                self.expired += 1
                log.info("VideoJob watch expired at resourceVersion %s; listing again", self.resource_version)
                self.resource_version = None
            except Exception as error:
                if self._stopping.is_set():
                    break
                self.healthy = False
                log.warning("VideoJob list/watch failed (%s); retrying in %.1f s", _describe(error), backoff)
                self._stopping.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _list(self) -> str:
        """Hand over every VideoJob; the list's resourceVersion (where the watch starts)."""
        listed = self._api.list_namespaced_custom_object(
            GROUP,
            VERSION,
            self._namespace,
            PLURAL,
            label_selector=self._selector,
            _request_timeout=(CONNECT_TIMEOUT_SECONDS, 60.0),
        )
        self.healthy = True
        self.lists += 1
        for item in cast(dict[str, Any], listed).get("items", []):
            self._hand_over(item, deleted=False)
        version: str = cast(dict[str, Any], listed)["metadata"]["resourceVersion"]
        return version

    def _watch(self) -> None:
        """One watch request, until the server ends it; raises ResourceExpired on 410 Gone."""
        try:
            response = self._api.list_namespaced_custom_object(
                GROUP,
                VERSION,
                self._namespace,
                PLURAL,
                label_selector=self._selector,
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=self.resource_version,
                timeout_seconds=self._watch_timeout,
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, self._watch_timeout + READ_GRACE_SECONDS),
            )
        except ApiException as error:
            if error.status == 410:
                raise ResourceExpired from error
            raise
        response = cast(urllib3.BaseHTTPResponse, response)
        self._response = response
        self.healthy = True
        self.watches += 1
        try:
            if self._stopping.is_set():
                return
            lines: Iterator[str] = iter_resp_lines(response)  # type: ignore[no-untyped-call]
            for line in lines:
                if line:
                    self._event(json.loads(line))
                if self._stopping.is_set():
                    return
        finally:
            self._response = None
            response.close()
            response.release_conn()

    def _event(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise ResourceExpired(obj.get("message", "Gone"))
            raise ApiException(status=obj.get("code", 0), reason=f"{obj.get('reason')}: {obj.get('message')}")
        version = obj.get("metadata", {}).get("resourceVersion")
        if kind != "BOOKMARK":
            self._hand_over(obj, deleted=kind == "DELETED")
        if version:
            self.resource_version = version

    def _hand_over(self, obj: dict[str, Any], *, deleted: bool) -> None:
        try:
            self._on_object(obj, deleted)
        except Exception:
            # A bad object or a database hiccup must not stop the mirror; the next event or
            # relist of this object hands it over again.
            log.exception("could not mirror VideoJob %s", obj.get("metadata", {}).get("name"))

    def _abort_response(self) -> None:
        """Unblock a thread reading the watch stream (closing alone can wait on the SSL lock)."""
        response = self._response
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _describe(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"
