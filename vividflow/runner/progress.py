"""Progress of a runner in a Pod, merge-patched onto ``status.progress`` of its VideoJob.

Uses the Pod's ServiceAccount, which needs nothing but ``patch`` on ``videojobs/status``: an empty
merge patch answers the current object, and each write carries the ``resourceVersion`` it was based on,
so progress never moves backwards (e.g. when a retried Pod starts again at 0) and a terminal VideoJob is
left alone. Sends from a background thread, at most every ``min_interval`` seconds (the last value is
flushed on :meth:`ProgressReporter.close`); failures are logged, never raised into the job.
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from vividflow.jobspec import MERGE_PATCH, TERMINAL_PHASES, videojob_path
from vividflow.settings import Settings

log = logging.getLogger(__name__)
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class ApiTarget:
    """Where the API server is and how to authenticate (a bearer token, re-read for rotation)."""

    server: str
    ca: ssl.SSLContext | bool
    token: str | None = None
    token_file: Path | None = None

    def headers(self) -> dict[str, str]:
        token = self.token_file.read_text().strip() if self.token_file else self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    @classmethod
    def in_cluster(cls) -> ApiTarget | None:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        token_file = SERVICE_ACCOUNT_DIR / "token"
        if not host or not port or not token_file.is_file():
            return None
        context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT_DIR / "ca.crt"))
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        return cls(server=server, ca=context, token_file=token_file)

    @classmethod
    def from_kubeconfig(cls, path: Path) -> ApiTarget:
        """The current context of a kubeconfig with token authentication."""
        config: dict[str, Any] = yaml.safe_load(path.read_text())
        context_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        ca: ssl.SSLContext | bool = not cluster.get("insecure-skip-tls-verify", False)
        if cluster.get("certificate-authority-data"):
            pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
            ca = ssl.create_default_context(cadata=pem)
        elif cluster.get("certificate-authority"):
            ca = ssl.create_default_context(cafile=cluster["certificate-authority"])
        token_file = Path(user["tokenFile"]) if user.get("tokenFile") else None
        return cls(server=cluster["server"], ca=ca, token=user.get("token"), token_file=token_file)

    @classmethod
    def discover(cls) -> ApiTarget | None:
        """In-cluster credentials, else ``$KUBECONFIG``; None when there are neither."""
        target = cls.in_cluster()
        if target is None and os.environ.get("KUBECONFIG"):
            target = cls.from_kubeconfig(Path(os.environ["KUBECONFIG"]))
        return target


class _Conflict(Exception):
    pass


class ProgressReporter:
    """A progress callback (``reporter(percent)``) that never blocks the job."""

    def __init__(
        self,
        target: ApiTarget,
        namespace: str,
        name: str,
        *,
        min_interval: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        self._url = target.server + videojob_path(namespace, name, "status")
        self._target = target
        self._client = httpx.Client(verify=target.ca, timeout=timeout)
        self._min_interval = min_interval
        self._cond = threading.Condition()
        self._wanted = -1
        self._sent = -1
        self._closing = False
        self._done = False
        self._current: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._run, name="progress-reporter", daemon=True)
        self._thread.start()

    def __call__(self, percent: int) -> None:
        with self._cond:
            if percent > self._wanted:
                self._wanted = percent
                self._cond.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Send the last value (if any is pending) and stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        self._client.close()

    @property
    def cancel_requested(self) -> bool:
        """Whether the VideoJob, as last read, asks the job to stop (cancelled, or already ended)."""
        current = self._current or {}
        phase = (current.get("status") or {}).get("phase")
        return bool((current.get("spec") or {}).get("cancelRequested")) or phase in TERMINAL_PHASES

    @property
    def sent(self) -> int:
        """The last value written (or found already higher on the VideoJob); -1 before any."""
        return self._sent

    def _next(self, last_send: float) -> int | None:
        """The value to send now (waiting for one, and for the throttle); None: stop."""
        with self._cond:
            while not self._done:
                if self._wanted <= self._sent:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                wait = last_send + self._min_interval - time.monotonic()
                if wait > 0 and not self._closing:
                    self._cond.wait(wait)
                    continue
                return self._wanted
            return None

    def _run(self) -> None:
        last_send = -float("inf")
        while (value := self._next(last_send)) is not None:
            last_send = time.monotonic()
            try:
                self._send(value)
            except Exception as error:  # progress is best effort: the job goes on
                log.warning("could not report progress %d%%: %s", value, error)
                with self._cond:
                    self._sent = max(self._sent, value)  # do not retry this value; a newer one may follow

    def _patch(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {**self._target.headers(), "Content-Type": MERGE_PATCH}
        response = self._client.request("PATCH", self._url, json=body, headers=headers)
        if response.status_code == 409:
            raise _Conflict()
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def _send(self, value: int) -> None:
        for _ in range(5):
            if self._current is None:
                self._current = self._patch({})  # answers the VideoJob as it is: nothing written
            status = self._current.get("status") or {}
            if status.get("phase") in TERMINAL_PHASES:
                with self._cond:
                    self._done = True
                return
            if int(status.get("progress") or 0) >= value:
                break
            body = {
                "metadata": {"resourceVersion": self._current["metadata"]["resourceVersion"]},
                "status": {"progress": value},
            }
            try:
                self._current = self._patch(body)
                break
            except _Conflict:
                self._current = None
        with self._cond:
            self._sent = max(self._sent, value)


def progress_reporter(settings: Settings) -> ProgressReporter | None:
    """A reporter for ``settings.videojob_name`` (set in runner Pods), or None outside a cluster."""
    if not settings.videojob_name:
        return None
    try:
        target = ApiTarget.discover()
    except (OSError, KeyError, StopIteration, yaml.YAMLError, ssl.SSLError) as error:
        log.warning("progress reporting is off: cannot read the API credentials: %s", error)
        return None
    if target is None:
        log.warning("progress reporting is off: no in-cluster credentials and no KUBECONFIG")
        return None
    namespace = settings.videojob_namespace or settings.kube_namespace
    return ProgressReporter(target, namespace, settings.videojob_name)
