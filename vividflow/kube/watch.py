"""Follow one collection and hand every object seen to a callback.

The informer pattern of client-go, reduced to what a level-based consumer needs: list, then watch from
the list's resourceVersion; when a watch ends (its ``timeoutSeconds``, a dropped connection, a read
timeout) watch again from the last version seen (events and bookmarks advance it); when the server
answers 410 Gone ("too old resource version") list again. Every event carries the whole object, and
a list hands over every object again, so a consumer that applies the whole state each time misses no
transition across reconnects and relists. Deletions are handed over too: a DELETED event carries the
object's last state.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from vividflow.kube.client import Kube, Stream
from vividflow.kube.errors import Gone, KubeError, error_for

log = logging.getLogger(__name__)

OnObject = Callable[[dict[str, Any], bool], None]
"""Called with each object seen and whether it was just deleted."""

CONNECT_TIMEOUT_SECONDS = 5.0
READ_GRACE_SECONDS = 15.0
"""A watch whose server-side timeout passed this long ago without an answer is dead: reconnect."""
MIN_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 0.2, 10.0


class ListWatch:
    """A thread that lists and watches the objects at ``path`` matching ``selector``.

    ``healthy`` is true while the last list or watch request succeeded. The counters (``lists``,
    ``watches``, ``expired``) are for logs and tests.
    """

    def __init__(
        self,
        kube: Kube,
        path: str,
        on_object: OnObject,
        *,
        selector: str = "",
        watch_timeout_seconds: int = 240,
        name: str = "watch",
    ) -> None:
        self._kube = kube
        self._path = path
        self._on_object = on_object
        self._selector = selector
        self._watch_timeout = watch_timeout_seconds
        self._name = name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: Stream | None = None
        self.healthy = False
        self.resource_version: str | None = None
        self.lists = self.watches = self.expired = 0

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            stream.abort()
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
            except Gone:
                self.expired += 1
                log.info("%s expired at resourceVersion %s; listing again", self._name, self.resource_version)
                self.resource_version = None
            except Exception as error:
                if self._stopping.is_set():
                    break
                self.healthy = False
                log.warning("%s failed (%s); retrying in %.1f s", self._name, _describe(error), backoff)
                self._stopping.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _list(self) -> str:
        """Hand over every object; the list's resourceVersion (where the watch starts)."""
        listed = self._kube.list(self._path, self._selector, timeout=(CONNECT_TIMEOUT_SECONDS, 60.0))
        self.healthy = True
        self.lists += 1
        for item in listed.get("items") or []:
            self._hand_over(item, deleted=False)
        version: str = listed["metadata"]["resourceVersion"]
        return version

    def _watch(self) -> None:
        """One watch request, until the server ends it; raises Gone on 410."""
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version or "",
            "timeoutSeconds": str(self._watch_timeout),
        }
        if self._selector:
            query["labelSelector"] = self._selector
        timeout = (CONNECT_TIMEOUT_SECONDS, self._watch_timeout + READ_GRACE_SECONDS)
        with self._kube.stream(self._path, query, timeout=timeout) as stream:
            self._stream = stream
            self.healthy = True
            self.watches += 1
            try:
                for line in stream.lines():
                    if self._stopping.is_set():
                        return
                    if line:
                        self._event(json.loads(line))
            finally:
                self._stream = None

    def _event(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise error_for(
                int(obj.get("code") or 0), str(obj.get("message", "")), str(obj.get("reason", ""))
            )
        version = obj.get("metadata", {}).get("resourceVersion")
        if kind != "BOOKMARK":
            self._hand_over(obj, deleted=kind == "DELETED")
        if version:
            self.resource_version = version

    def _hand_over(self, obj: dict[str, Any], *, deleted: bool) -> None:
        try:
            self._on_object(obj, deleted)
        except Exception:
            # A bad object or a database hiccup must not stop the watch; the next event or relist of
            # this object hands it over again.
            log.exception("%s: could not handle %s", self._name, obj.get("metadata", {}).get("name"))


def _describe(error: Exception) -> str:
    if isinstance(error, KubeError):
        return f"HTTP {error.status} {error.reason or error.message}"
    return f"{type(error).__name__}: {error}"
