"""The latest VideoJobs, Jobs and Pods seen on the watch streams, by VideoJob (an informer's store).

Fed by kopf's event handlers; read by the reconciler so that an event costs no extra GETs. Decisions
that cannot be undone (a terminal status, a lost Job) are taken on fresh reads, never on this cache.
"""

from __future__ import annotations

import threading

from vividflow.jobspec import LABEL_VIDEOJOB, Json

Key = tuple[str, str]
"""(namespace, VideoJob name)"""


def _version(obj: Json) -> int | None:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _newer(new: Json, old: Json | None) -> bool:
    """Is ``new`` newer than ``old`` (a write-through may race its watch event; the watch event of our
    own write brings nothing new)?"""
    if old is None or old["metadata"].get("uid") != new["metadata"].get("uid"):
        return True
    before, after = _version(old), _version(new)
    if before is None or after is None:
        return bool(old["metadata"].get("resourceVersion") != new["metadata"].get("resourceVersion"))
    return after > before


def key_of(obj: Json) -> Key | None:
    """The VideoJob that a Job or Pod belongs to (by its label)."""
    metadata = obj.get("metadata") or {}
    name = (metadata.get("labels") or {}).get(LABEL_VIDEOJOB)
    namespace = metadata.get("namespace")
    return (namespace, name) if namespace and name else None


class Cache:
    """Thread-safe store of the latest object bodies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._videojobs: dict[Key, Json] = {}
        self._jobs: dict[Key, Json] = {}
        self._pods: dict[Key, dict[str, Json]] = {}

    # -- writes (watch events and write-through) --------------------------------------------------

    def put_videojob(self, body: Json) -> bool:
        """Store ``body`` if it is newer than what we have; whether it was."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self._lock:
            if not _newer(body, self._videojobs.get(key)):
                return False
            self._videojobs[key] = body
            return True

    def forget_videojob(self, key: Key) -> None:
        with self._lock:
            self._videojobs.pop(key, None)

    def put_job(self, body: Json) -> bool:
        """Store ``body`` if it is newer than what we have; whether it was."""
        key = key_of(body)
        if key is None:
            return False
        with self._lock:
            if not _newer(body, self._jobs.get(key)):
                return False
            self._jobs[key] = body
            return True

    def forget_job(self, body: Json) -> None:
        key = key_of(body)
        with self._lock:
            current = self._jobs.get(key) if key else None
            if key and current and current["metadata"].get("uid") == body["metadata"].get("uid"):
                del self._jobs[key]

    def put_pod(self, body: Json) -> bool:
        """Store ``body`` if it is newer than what we have; whether it was."""
        key = key_of(body)
        if key is None:
            return False
        with self._lock:
            pods = self._pods.setdefault(key, {})
            name = body["metadata"]["name"]
            if not _newer(body, pods.get(name)):
                return False
            pods[name] = body
            return True

    def forget_pod(self, body: Json) -> None:
        key = key_of(body)
        with self._lock:
            pods = self._pods.get(key) if key else None
            if key and pods is not None:
                pods.pop(body["metadata"]["name"], None)
                if not pods:
                    del self._pods[key]

    # -- reads ---------------------------------------------------------------------------------------

    def videojob(self, key: Key) -> Json | None:
        with self._lock:
            return self._videojobs.get(key)

    def job(self, key: Key) -> Json | None:
        with self._lock:
            return self._jobs.get(key)

    def pods(self, key: Key) -> list[Json]:
        with self._lock:
            return list(self._pods.get(key, {}).values())

    def videojob_keys(self) -> list[Key]:
        with self._lock:
            return list(self._videojobs)

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {
                "videojobs": len(self._videojobs),
                "jobs": len(self._jobs),
                "pods": sum(len(p) for p in self._pods.values()),
            }
