"""A fake node for the test control plane: plays scheduler and kubelet, runs containers as local processes.

The real Job controller creates Pods; nothing else would ever run them (no scheduler, no kubelet, no
container runtime here). :class:`FakeKubelet` watches Pods on the real API server and does, for each,
what kube-scheduler and the kubelet do, the way kwok's stages describe a pod's life:

1. **Schedule**: an unbound Pod (no ``spec.nodeName``, ``schedulerName`` default) is bound to
   ``node_name`` through the ``pods/binding`` subresource. ``schedule`` (a predicate on the Pod dict)
   can hold Pods back: they stay Pending with ``PodScheduled=False, reason Unschedulable`` until
   :meth:`FakeKubelet.resync` finds the predicate true. nodeSelector, affinity, tolerations and
   resources are not evaluated.
2. **Start**: the Pod's first container runs as a local subprocess (its own process group, cwd a fresh
   directory under ``work_dir``, stdin closed, stdout+stderr to a log file). Its argv is
   ``command + args`` with ``$(VAR)`` expanded as Kubernetes does, then passed through
   ``command_rewriter`` (e.g. :func:`python_to_sys_executable`). Its environment: ``base_env`` (what the
   image would provide), then ``envFrom`` (``secretRef``, ``configMapRef``, with ``prefix``), then
   ``env`` (``value`` with ``$(VAR)`` expansion, ``valueFrom.secretKeyRef``, ``configMapKeyRef``,
   ``fieldRef`` for ``metadata.name|namespace|uid|labels['k']|annotations['k']``, ``spec.nodeName``,
   ``spec.serviceAccountName``, ``status.podIP``, ``status.hostIP``), then ``HOSTNAME`` = the pod name and
   ``termination_log_env`` (default ``VIVID_TERMINATION_LOG``) = a host file standing for the
   container's ``terminationMessagePath``. A missing Secret/ConfigMap/key that is not ``optional``
   keeps the container waiting with reason ``CreateContainerConfigError`` (retried every second), as the
   kubelet does. Then the Pod is patched Running: ``podIP``, ``hostIP``, ``startTime``, conditions
   ``PodReadyToStartContainers``, ``Initialized``, ``ContainersReady``, ``Ready``, ``PodScheduled``
   all True, ``containerStatuses[0].state.running``. An argv that cannot be executed ends the Pod
   Failed with ``terminated {exitCode: 128, reason: StartError}``.
3. **Finish**: when the process exits, ``pods/status`` gets ``phase`` Succeeded (exit 0) or Failed, and
   ``containerStatuses[0].state.terminated`` with ``exitCode`` (128 + signal number for a signal),
   ``reason``, ``message``, ``startedAt``, ``finishedAt``, ``containerID``. Reasons: ``Completed`` (0),
   ``Error`` (non-zero, or killed by the kubelet itself), ``OOMKilled`` (exit 137 by a SIGKILL that the
   kubelet did not send: what the kernel's OOM killer does, so a test simulates an OOM with
   ``os.kill(os.getpid(), signal.SIGKILL)``). ``message`` is the termination-log file, its last 4096
   bytes (kubelet's ``tail.ReadAtMost``); with ``terminationMessagePolicy: FallbackToLogsOnError`` and a
   failure with an empty file, the last 80 lines / 2048 bytes of the output.
   A Pod with a ``serviceAccountName`` whose ServiceAccount exists gets what the real kubelet projects
   at ``/var/run/secrets/kubernetes.io/serviceaccount``: a token from the TokenRequest API *bound to the
   Pod* (so the API server sees its ``authentication.kubernetes.io/pod-name``), here as a kubeconfig
   with ``tokenFile`` in ``KUBECONFIG`` (over any ``KUBECONFIG`` of ``base_env``; ``project_tokens=False``
   turns it off).
4. **Pod deadline**: a Pod's own ``spec.activeDeadlineSeconds`` is enforced from ``startTime`` as the
   kubelet does: the process is killed and the Pod ends Failed with ``reason: DeadlineExceeded``. (A
   *Job's* ``activeDeadlineSeconds`` is the Job controller's business: it deletes the Job's Pods, see 5.)
5. **Deletion**: a bound Pod with a ``deletionTimestamp`` gets SIGTERM to its process group, then
   SIGKILL after ``min(deletionGracePeriodSeconds, max_grace_seconds)``; its status is patched terminal
   from the exit code (a process that exits 0 on SIGTERM ends Succeeded, as with the real kubelet), then
   the Pod is deleted with ``gracePeriodSeconds=0`` (kwok's pod-delete stage). A container that never
   started ends ``terminated {exitCode: 137, reason: ContainerStatusUnknown}``. Without this, cancelled
   or deadline-exceeded Jobs would never finish. The Job controller removes its
   ``batch.kubernetes.io/job-tracking`` finalizer itself.
6. **Image pull errors**: a Pod whose container image is in ``image_pull_errors`` never runs: it stays
   Pending with ``containerStatuses[0].state.waiting`` reason ``ErrImagePull``, then
   ``ImagePullBackOff`` after ``pull_backoff_seconds``.

7. **Container mode**: with a ``container_runtime`` (:class:`tests.kube.kubelet_podman.PodmanRuntime`),
   a container whose image the runtime has (local podman storage) runs as a real container instead of a
   process: the image's entrypoint and env, the Pod's command/args/env/envFrom/workingDir, its
   projected ServiceAccount token *mounted* at ``/var/run/secrets/kubernetes.io/serviceaccount``
   (``KUBERNETES_SERVICE_HOST``/``PORT`` point at the API server; no ``base_env``, ``KUBECONFIG``,
   ``command_rewriter`` or ``termination_log_env``), the termination log at
   ``terminationMessagePath``, emptyDir/secret/configMap volumes, the security context, the host's
   network (``podIP`` 127.0.0.1). Everything above (waiting, status, deadlines, deletion) is the same;
   ``ContainerRun.mode`` says which mode ran it. The seam is ``tests/kube/kubelet_runtime.py``.

With ``register_node`` a Node object ``node_name`` is created (when missing) and marked Ready; the Job
controller does not need one, kubectl shows it. Nothing deletes it (several kubelets may share it) and
it gets no heartbeats (no node-lifecycle controller runs).

Not emulated: init/sidecar containers (only ``containers[0]`` runs), volumes and mounts of processes, probes,
restarts (use ``restartPolicy: Never``), resources, ``kubectl logs``/``exec``, Events. Read a
container's output with :attr:`ContainerRun.output` instead.

Watching: list, then watch from the list's ``resourceVersion`` with bookmarks; a ``410 Gone`` (or any
broken watch) relists. :meth:`FakeKubelet.stop` closes the watch at once, kills every process and, with
``report=True``, marks their Pods Failed so a namespace deletion does not hang on them.

API: :meth:`~FakeKubelet.start` (returns once the first list is handled) / :meth:`~FakeKubelet.stop`
(or ``with``); mutable attributes ``base_env``, ``image_pull_errors``, ``command_rewriter``,
``schedule`` (read when a Pod is taken up); :attr:`~FakeKubelet.runs` (every :class:`ContainerRun`, oldest
first) and :meth:`~FakeKubelet.wait_for_runs` (by ``pod_name`` or ``job_name``); ``errors`` (unexpected
failures in its threads, expected to stay empty), ``lists``/``expired`` (relists, 410s). A
:class:`ContainerRun` has ``argv``, ``env``, ``pid``, ``output`` (stdout+stderr), ``exit_code``,
``reason``, ``message``, ``killed_by`` (``deletion``/``deadline``/``stop``/``gone``, None when the
process ended by itself), ``waiting_reason``; :meth:`ContainerRun.wait` returns once the Pod's terminal
status is written: read ``killed_by``/``exit_code`` only after it.

    kubelet = FakeKubelet(kubeconfig, namespace="ns", base_env={"PATH": ...},
                          command_rewriter=python_to_sys_executable)
    with kubelet:
        ... create a Job ...
        (run,) = kubelet.wait_for_runs(job_name="hello")
        run.wait()
        assert run.exit_code == 0 and "hi" in run.output
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.kube.kubelet_runtime import (
    ContainerConfigError,
    ContainerExit,
    ContainerLaunch,
    ContainerRuntime,
    RuntimeContainer,
)

__all__ = [
    "TERMINATION_MESSAGE_LIMIT",
    "CommandRewriter",
    "ContainerConfigError",
    "ContainerExit",
    "ContainerLaunch",
    "ContainerRun",
    "ContainerRuntime",
    "FakeKubelet",
    "KubeletError",
    "RuntimeContainer",
    "python_to_sys_executable",
]

log = logging.getLogger(__name__)

TERMINATION_MESSAGE_LIMIT = 4096
"""Bytes of a termination-log file the kubelet keeps (the last ones)."""
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048
"""``FallbackToLogsOnError``: at most this many last lines and bytes of the output."""
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

CommandRewriter = Callable[[list[str], Mapping[str, Any]], list[str]]
"""``(argv, pod) -> argv``: maps the image's command onto this machine."""

Pod = dict[str, Any]

_PYTHON = re.compile(r"(?:/usr(?:/local)?/bin/)?python(?:3(?:\.\d+)?)?")


def python_to_sys_executable(argv: list[str], pod: Mapping[str, Any]) -> list[str]:
    """Run the image's ``python`` (``python3``, ``/usr/local/bin/python3.11``, …) with this interpreter."""
    if argv and _PYTHON.fullmatch(argv[0]):
        return [sys.executable, *argv[1:]]
    return argv


class KubeletError(RuntimeError):
    """An API request of the fake kubelet failed."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class _Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _timestamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, ``$$`` is ``$``, the rest stays."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, text)


# --------------------------------------------------------------------------------------------------
# A raw JSON client on top of the kubernetes package's ApiClient (kubeconfig handling, TLS, auth)
# --------------------------------------------------------------------------------------------------


class _Api:
    def __init__(self, kubeconfig: Path) -> None:
        self.client: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig)
        )

    def open(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] = 15.0,
    ) -> urllib3.BaseHTTPResponse:
        """Send a request; the response is not read yet (the caller streams or reads it)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = self.client.param_serialize(
            method,
            path,
            query_params=[(k, v) for k, v in (query or {}).items()],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(*params, _request_timeout=timeout)
        raw: urllib3.BaseHTTPResponse = response.response
        return raw

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        ok: Iterable[int] = (),
    ) -> Any:
        """Send a request and decode the JSON answer; KubeletError for a status >= 400 not in ``ok``."""
        resp = self.open(method, path, body, query=query, content_type=content_type)
        try:
            data = resp.read()
        finally:
            resp.release_conn()
        text = data.decode(errors="replace")
        if resp.status >= 400 and resp.status not in set(ok):
            raise KubeletError(f"{method} {path} -> {resp.status}: {text[:1000]}", resp.status)
        try:
            return json.loads(text)
        except ValueError:
            return text

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------------------------------
# Records of what ran
# --------------------------------------------------------------------------------------------------


@dataclass
class ContainerRun:
    """One container of one Pod as the fake kubelet handled it (started or not)."""

    namespace: str
    pod: str
    uid: str
    container: str
    image: str
    labels: dict[str, str]
    log_path: Path
    termination_log_path: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    """``Completed``, ``Error``, ``OOMKilled``, ``StartError``, ``ContainerStatusUnknown``."""
    message: str | None = None
    """The termination message reported in the Pod's status."""
    killed_by: str | None = None
    """``deletion``, ``deadline``, ``stop`` or ``gone`` when the kubelet ended the process."""
    waiting_reason: str | None = None
    """``ErrImagePull``/``ImagePullBackOff``/``CreateContainerConfigError`` while it cannot start."""
    mode: str = "process"
    """``process`` (a local process) or ``container`` (run by the container runtime)."""
    container_id: str | None = None
    """The runtime's container id (container mode)."""
    image_id: str | None = None
    """The runtime's image id (container mode)."""
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def started(self) -> bool:
        return self.pid is not None

    @property
    def finished(self) -> bool:
        return self.done.is_set()

    @property
    def output(self) -> str:
        """stdout and stderr of the process so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait(self, timeout: float = 30.0) -> ContainerRun:
        """Wait until the kubelet has reported the container terminated (and the Pod's status patched)."""
        if not self.done.wait(timeout):
            raise AssertionError(f"pod {self.namespace}/{self.pod} still running after {timeout} s")
        return self


@dataclass
class _PodWork:
    run: ContainerRun
    thread: threading.Thread | None = None
    process: subprocess.Popen[bytes] | None = None
    container: RuntimeContainer | None = None
    kill: threading.Event = field(default_factory=threading.Event)
    kill_reason: str = ""
    grace_seconds: float = 0.0
    delete_after: bool = False
    report: bool = True


# --------------------------------------------------------------------------------------------------
# The kubelet
# --------------------------------------------------------------------------------------------------


class FakeKubelet:
    """Schedules and runs the Pods of ``namespace`` (all namespaces when None) on a node of its own.

    Args:
        kubeconfig: credentials to use (admin, or a ServiceAccount allowed pods, pods/binding,
            pods/status, secrets, configmaps, nodes).
        namespace: the namespace to watch; None for all.
        node_name: the node Pods are bound to.
        base_env: the environment beneath each container's env (the image's); copied, then
            :attr:`base_env` may be changed until a Pod starts.
        command_rewriter: maps a container's argv onto this machine (default: unchanged).
        image_pull_errors: images that fail to pull (exact ``image`` strings); a mutable set.
        work_dir: where per-pod directories (cwd, output log, termination log) go; default a temporary
            directory removed by :meth:`stop`.
        register_node: create the Node object (when missing) and mark it Ready.
        max_grace_seconds: cap of the SIGTERM-to-SIGKILL grace period of a deleted Pod.
        pull_backoff_seconds: ErrImagePull turns into ImagePullBackOff after this long.
        termination_log_env: the env variable that receives the termination-log file's path.
        schedule: predicate on a Pod dict; False keeps it unscheduled (see :meth:`resync`).
        watch_timeout_seconds: server-side timeout of one watch request (then it rewatches).
        project_tokens: give Pods with a ServiceAccount a token bound to them.
        container_runtime: runs the containers whose image it handles as real containers (container
            mode, e.g. :class:`tests.kube.kubelet_podman.PodmanRuntime`); the others run as processes.
    """

    def __init__(
        self,
        kubeconfig: Path,
        *,
        namespace: str | None = None,
        node_name: str = "vivid-node",
        base_env: Mapping[str, str] | None = None,
        command_rewriter: CommandRewriter | None = None,
        image_pull_errors: Iterable[str] = (),
        work_dir: Path | None = None,
        register_node: bool = True,
        max_grace_seconds: float = 2.0,
        pull_backoff_seconds: float = 1.0,
        termination_log_env: str = "VIVID_TERMINATION_LOG",
        schedule: Callable[[Pod], bool] | None = None,
        watch_timeout_seconds: int = 60,
        project_tokens: bool = True,
        container_runtime: ContainerRuntime | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.container_runtime = container_runtime
        self.project_tokens = project_tokens
        self.namespace = namespace
        self.node_name = node_name
        self.base_env: dict[str, str] = dict(base_env or {})
        self.command_rewriter = command_rewriter
        self.image_pull_errors: set[str] = set(image_pull_errors)
        self.register_node = register_node
        self.max_grace_seconds = max_grace_seconds
        self.pull_backoff_seconds = pull_backoff_seconds
        self.termination_log_env = termination_log_env
        self.schedule = schedule
        self.watch_timeout_seconds = watch_timeout_seconds
        self.errors: list[str] = []
        """Unexpected failures inside the kubelet's threads (a test may assert it stays empty)."""
        self._work_dir_arg = work_dir
        self._work_dir: Path | None = None
        self._api: _Api | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch_response: urllib3.BaseHTTPResponse | None = None
        self._work: dict[str, _PodWork] = {}  # by pod uid
        self._runs: list[ContainerRun] = []
        self._pods: dict[str, Pod] = {}  # latest seen, by uid
        self._bound: set[str] = set()
        self._unschedulable: set[str] = set()
        self._finished_deleting: set[str] = set()
        self._ip_counter = 1
        self.synced = threading.Event()
        """Set once the first list has been handled."""
        self.lists = 0
        """Pod lists made: the first, then one after every expired (410 Gone) or broken watch."""
        self.expired = 0
        """Watches that ended with 410 Gone (their resourceVersion compacted away)."""

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> FakeKubelet:
        """Register the node (optionally), start watching, return once the first list is handled."""
        if self._thread is not None:
            raise KubeletError("the fake kubelet is already started")
        self._stopping.clear()
        if self._work_dir_arg is not None:
            self._work_dir_arg.mkdir(parents=True, exist_ok=True)
            self._work_dir = self._work_dir_arg
        else:
            self._work_dir = Path(tempfile.mkdtemp(prefix="vivid-kubelet-"))
        self._api = _Api(self.kubeconfig)
        if self.register_node:
            self._register_node()
        self._thread = threading.Thread(target=self._loop, name=f"kubelet-{self.node_name}", daemon=True)
        self._thread.start()
        if not self.synced.wait(timeout):
            self.stop()
            raise KubeletError(f"the fake kubelet did not list pods within {timeout} s: {self.errors}")
        return self

    def stop(self, *, report: bool = True, timeout: float = 10.0) -> None:
        """Stop watching, kill every process (its Pod marked Failed when ``report``), join all threads."""
        if self._thread is None:
            return
        self._stopping.set()
        response = self._watch_response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()  # unblocks the watch thread's read at once (urllib3 >= 2.3)
        with self._lock:
            work = list(self._work.values())
        for item in work:
            item.report = report
            self._request_kill(item, "stop", 0.0, delete_after=False)
        deadline = time.monotonic() + timeout
        for item in work:
            if item.thread is not None:
                item.thread.join(max(0.1, deadline - time.monotonic()))
        self._thread.join(max(0.1, deadline - time.monotonic()))
        self._thread = None
        if self._api is not None:
            self._api.close()
            self._api = None
        if self._work_dir_arg is None and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
        self.synced.clear()

    # -- what tests look at ----------------------------------------------------------------------

    @property
    def runs(self) -> list[ContainerRun]:
        """Every container handled so far, in the order they were taken up."""
        with self._lock:
            return list(self._runs)

    def wait_for_runs(
        self,
        count: int = 1,
        *,
        pod_name: str | None = None,
        job_name: str | None = None,
        started: bool = True,
        timeout: float = 30.0,
    ) -> list[ContainerRun]:
        """Wait until ``count`` containers (of ``pod_name``/``job_name`` if given) were taken up
        (and, with ``started``, their process started); returns them, oldest first."""

        def matching() -> list[ContainerRun]:
            return [
                run
                for run in self._runs
                if (pod_name is None or run.pod == pod_name)
                and (job_name is None or run.labels.get(JOB_NAME_LABEL) == job_name)
                and (not started or run.started or run.finished)
            ]

        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := matching()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(found)} of {count} container runs (pod={pod_name}, job={job_name}) after "
                        f"{timeout} s; kubelet errors: {self.errors}"
                    )
                self._changed.wait(min(left, 0.5))
            return found

    def resync(self) -> None:
        """Look at every known Pod again (e.g. after changing :attr:`schedule`)."""
        with self._lock:
            pods = list(self._pods.values())
        for pod in pods:
            self._reconcile(pod)

    # -- the watch -------------------------------------------------------------------------------

    @property
    def api(self) -> _Api:
        if self._api is None:
            raise KubeletError("the fake kubelet is not started")
        return self._api

    def _pods_path(self) -> str:
        if self.namespace:
            return f"/api/v1/namespaces/{quote(self.namespace)}/pods"
        return "/api/v1/pods"

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                resource_version = self._relist()
                self.synced.set()
                while not self._stopping.is_set():
                    resource_version = self._watch(resource_version)
                    failures = 0
            except _Gone:
                self.expired += 1
                log.debug("watch expired, relisting")
            except Exception as error:
                if self._stopping.is_set():
                    break
                failures += 1
                self._record_error(f"watch: {error!r}")
                self._stopping.wait(min(0.1 * 2**failures, 2.0))

    def _relist(self) -> str:
        listing = self.api.call("GET", self._pods_path())
        self.lists += 1
        seen = set()
        for pod in listing.get("items", []):
            seen.add(pod["metadata"]["uid"])
            self._reconcile(pod)
        with self._lock:
            vanished = [uid for uid in self._pods if uid not in seen]
        for uid in vanished:
            self._forget(uid)
        version: str = listing["metadata"]["resourceVersion"]
        return version

    def _watch(self, resource_version: str) -> str:
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_timeout_seconds),
        }
        response = self.api.open(
            "GET", self._pods_path(), query=query, timeout=(10.0, self.watch_timeout_seconds + 30.0)
        )
        self._watch_response = response
        try:
            if self._stopping.is_set():  # stop() came before the response was there to shut down
                return resource_version
            if response.status == 410:
                raise _Gone
            if response.status >= 400:
                raise KubeletError(f"watch -> {response.status}: {response.read()[:500]!r}", response.status)
            buffer = b""
            for chunk in response.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        resource_version = self._handle_event(json.loads(line), resource_version)
                if self._stopping.is_set():
                    break
        except (urllib3.exceptions.HTTPError, OSError):
            if not self._stopping.is_set():
                raise
        finally:
            self._watch_response = None
            response.release_conn()
        return resource_version

    def _handle_event(self, event: dict[str, Any], resource_version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone
            raise KubeletError(f"watch error: {obj.get('message')}", int(obj.get("code") or 0))
        version: str = obj.get("metadata", {}).get("resourceVersion") or resource_version
        if kind == "BOOKMARK":
            return version
        if kind == "DELETED":
            self._forget(obj["metadata"]["uid"])
        elif kind in ("ADDED", "MODIFIED"):
            self._reconcile(obj)
        return version

    # -- decisions (on the watch thread: quick) ---------------------------------------------------

    def _reconcile(self, pod: Pod) -> None:
        try:
            self._reconcile_pod(pod)
        except Exception as error:
            if not self._stopping.is_set():
                self._record_error(f"pod {_key(pod)}: {error!r}")

    def _reconcile_pod(self, pod: Pod) -> None:
        meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
        uid = meta["uid"]
        node = spec.get("nodeName")
        with self._lock:
            self._pods[uid] = pod
            work = self._work.get(uid)
        deleting = bool(meta.get("deletionTimestamp"))
        if not node:
            if not deleting and spec.get("schedulerName", "default-scheduler") == "default-scheduler":
                self._schedule(pod)
            return
        if node != self.node_name:
            return
        terminal = status.get("phase") in ("Succeeded", "Failed")
        if work is not None:
            if deleting and work.run.finished:
                self._delete_now(pod)  # deleted while its exit was being reported
            elif deleting:
                grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                self._request_kill(work, "deletion", grace, delete_after=True)
            return
        if deleting and terminal:
            self._delete_now(pod)
            return
        if terminal or self._stopping.is_set():
            return
        # A bound, live Pod this kubelet has no process for: a new one to run (or, when already Running,
        # one a previous kubelet started: its container is gone, as after a node reboot).
        self._take_up(pod, lost=status.get("phase") == "Running" or deleting, deleting=deleting)

    def _schedule(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if uid in self._bound or self._stopping.is_set():
                return
        if self.schedule is not None and not self.schedule(pod):
            with self._lock:
                first = uid not in self._unschedulable
                self._unschedulable.add(uid)
            if first:
                condition = {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": f"0/1 nodes are available: held back by the fake kubelet {self.node_name}.",
                    "lastTransitionTime": _timestamp(_now()),
                }
                self._patch_status(pod, {"status": {"phase": "Pending", "conditions": [condition]}})
            return
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod["metadata"]["name"], "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        self.api.call("POST", f"{_pod_path(pod)}/binding", body, ok=(404, 409))
        with self._lock:
            self._bound.add(uid)
            self._unschedulable.discard(uid)

    def _take_up(self, pod: Pod, *, lost: bool, deleting: bool) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        container = spec["containers"][0]
        pod_dir = self.work_dir / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        run = ContainerRun(
            namespace=meta["namespace"],
            pod=meta["name"],
            uid=meta["uid"],
            container=container["name"],
            image=container.get("image", ""),
            labels=dict(meta.get("labels") or {}),
            log_path=pod_dir / "output.log",
            termination_log_path=pod_dir / "termination-log",
        )
        work = _PodWork(run=run, delete_after=deleting)
        if deleting:
            work.kill_reason = "deletion"
            work.kill.set()
        target = self._finish_lost if lost else self._run_pod
        work.thread = threading.Thread(
            target=target, args=(work, pod), name=f"pod-{meta['name']}", daemon=True
        )
        with self._changed:
            if meta["uid"] in self._work:
                return
            self._work[meta["uid"]] = work
            self._runs.append(run)
            self._changed.notify_all()
        work.thread.start()

    def _request_kill(self, work: _PodWork, reason: str, grace: float, *, delete_after: bool) -> None:
        with self._lock:
            if not work.kill.is_set():
                work.kill_reason = reason
                work.grace_seconds = min(grace, self.max_grace_seconds)
                if work.run.started and not work.run.finished:
                    work.run.killed_by = reason  # visible at once; final when ``done`` is set
            work.delete_after = work.delete_after or delete_after
            work.kill.set()

    def _forget(self, uid: str) -> None:
        """The Pod is gone from the API (deleted with grace 0 or while not watching)."""
        with self._lock:
            self._pods.pop(uid, None)
            self._bound.discard(uid)
            self._unschedulable.discard(uid)
            work = self._work.get(uid)
        if work is not None and not work.run.finished:
            work.report = False
            self._request_kill(work, "gone", 0.0, delete_after=False)

    # -- one pod (its own thread) ----------------------------------------------------------------

    def _run_pod(self, work: _PodWork, pod: Pod) -> None:
        run = work.run
        try:
            self._run_container(work, pod)
        except Exception as error:
            if not self._stopping.is_set():
                self._record_error(f"pod {_key(pod)}: {error!r}")
        finally:
            if work.container is not None:
                work.container.remove()
            if work.process is not None and work.process.poll() is None:
                _kill_group(work.process, signal.SIGKILL)
                work.process.wait()
            with self._changed:
                run.done.set()
                self._changed.notify_all()

    def _run_container(self, work: _PodWork, pod: Pod) -> None:
        run, spec = work.run, pod["spec"]
        container = spec["containers"][0]
        started_pending = _now()
        pod_ip = self._next_pod_ip()
        base_status: dict[str, Any] = {"hostIP": "127.0.0.1", "startTime": _timestamp(started_pending)}

        if run.image in self.image_pull_errors:
            for reason in ("ErrImagePull", "ImagePullBackOff"):
                run.waiting_reason = reason
                verb = "pull" if reason == "ErrImagePull" else "Back-off pulling"
                message = (
                    f'failed to {verb} image "{run.image}": not found (the fake kubelet {self.node_name} '
                    "simulates a failed pull)"
                    if reason == "ErrImagePull"
                    else f'Back-off pulling image "{run.image}"'
                )
                self._patch_waiting(pod, container, reason, message, base_status)
                if work.kill.wait(self.pull_backoff_seconds if reason == "ErrImagePull" else None):
                    break
            self._finish_unstarted(work, pod, container)
            return

        runtime = self.container_runtime
        if runtime is not None and not runtime.handles(run.image):
            runtime = None  # not in the runtime's image storage: a local process
        if runtime is not None:
            run.mode = "container"
            pod_ip = "127.0.0.1"  # containers share the host's network
        launch: ContainerLaunch | None = None
        while True:
            try:
                env = self._container_env(pod, container, pod_ip, contained=runtime is not None)
                command = [_expand(part, env) for part in container.get("command", [])]
                args = [_expand(part, env) for part in container.get("args", [])]
                if runtime is not None:
                    launch = self._launch(run, pod, container, command, args, env)
                    runtime.prepare(launch)
                break
            except ContainerConfigError as error:
                run.waiting_reason = "CreateContainerConfigError"
                self._patch_waiting(pod, container, "CreateContainerConfigError", str(error), base_status)
                if work.kill.wait(1.0):
                    self._finish_unstarted(work, pod, container)
                    return
        run.waiting_reason = None
        argv = [*command, *args]
        run.termination_log_path.write_bytes(b"")
        if launch is None:
            if self.command_rewriter is not None:
                argv = self.command_rewriter(argv, pod)
            env = {**env, self.termination_log_env: str(run.termination_log_path)}
        run.argv, run.env = argv, env
        if work.kill.is_set():
            self._finish_unstarted(work, pod, container)
            return

        started = _now()
        try:
            if runtime is not None and launch is not None:
                work.container = runtime.start(launch)
                work.process = work.container.process
                run.container_id, run.image_id = work.container.container_id, work.container.image_id
            else:
                with run.log_path.open("wb") as output:
                    if not argv:
                        raise FileNotFoundError("no command given (the fake kubelet has no image entrypoint)")
                    work.process = subprocess.Popen(
                        argv,
                        env=env,
                        cwd=run.log_path.parent,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
        except OSError as error:
            run.started_at = run.finished_at = started
            self._report_terminated(
                work,
                pod,
                container,
                exit_code=128,
                reason="StartError",
                message=f"failed to start container {container['name']!r}: {error}",
                started=started,
                base_status={**base_status, "podIP": pod_ip},
            )
            return
        run.pid, run.started_at = work.process.pid, started
        with self._changed:
            self._changed.notify_all()
        base_status["podIP"] = pod_ip
        base_status["podIPs"] = [{"ip": pod_ip}]
        self._patch_status(
            pod,
            {
                "status": {
                    **base_status,
                    "phase": "Running",
                    "conditions": _conditions(ready=True, started=started),
                    "containerStatuses": [
                        _container_status(
                            run, container, {"running": {"startedAt": _timestamp(started)}}, True
                        )
                    ],
                }
            },
        )

        deadline_seconds = spec.get("activeDeadlineSeconds")
        deadline = None if deadline_seconds is None else time.monotonic() + float(deadline_seconds)
        while work.process.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                self._request_kill(
                    work, "deadline", float(spec.get("terminationGracePeriodSeconds", 30)), delete_after=False
                )
            if work.kill.wait(0.05):
                self._terminate(work)
                break
        returncode = work.process.wait()
        finished = _now()
        run.finished_at = finished
        if work.container is not None:
            ended = work.container.exit()
            # The kernel's OOM kill, or a SIGKILL that the kubelet did not send (as for processes).
            exit_code = ended.exit_code
            sigkilled = ended.oom_killed or exit_code == 128 + signal.SIGKILL
        else:
            exit_code = returncode if returncode >= 0 else 128 - returncode
            sigkilled = returncode == -signal.SIGKILL
        killed_by = (work.kill_reason or None) if work.kill.is_set() else None
        run.killed_by = killed_by
        if exit_code == 0:
            reason = "Completed"
        elif sigkilled and killed_by is None:
            reason = "OOMKilled"
        else:
            reason = "Error"
        message = _termination_message(run, container, failed=exit_code != 0)
        pod_status: dict[str, Any] = {}
        if killed_by == "deadline":
            pod_status = {
                "reason": "DeadlineExceeded",
                "message": "Pod was active on the node longer than the specified deadline",
            }
        self._report_terminated(
            work,
            pod,
            container,
            exit_code=exit_code,
            reason=reason,
            message=message,
            started=started,
            base_status={**base_status, **pod_status},
            finished=finished,
        )

    def _terminate(self, work: _PodWork) -> None:
        process = work.process
        if process is None or process.poll() is not None:
            return
        if work.container is not None:
            work.container.stop(work.grace_seconds)
            return
        if work.grace_seconds > 0:
            _kill_group(process, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(work.grace_seconds)
        if process.poll() is None:
            _kill_group(process, signal.SIGKILL)

    def _finish_lost(self, work: _PodWork, pod: Pod) -> None:
        try:
            self._finish_unstarted(work, pod, pod["spec"]["containers"][0])
        except Exception as error:
            if not self._stopping.is_set():
                self._record_error(f"pod {_key(pod)}: {error!r}")
        finally:
            with self._changed:
                work.run.done.set()
                self._changed.notify_all()

    def _finish_unstarted(self, work: _PodWork, pod: Pod, container: dict[str, Any]) -> None:
        """End a Pod whose container never ran here (pull error, config error, lost)."""
        work.run.killed_by = work.kill_reason or "gone"
        now = _now()
        self._report_terminated(
            work,
            pod,
            container,
            exit_code=137,
            reason="ContainerStatusUnknown",
            message="The container could not be located when the pod was terminated",
            started=None,
            base_status={},
            finished=now,
        )

    def _report_terminated(
        self,
        work: _PodWork,
        pod: Pod,
        container: dict[str, Any],
        *,
        exit_code: int,
        reason: str,
        message: str,
        started: datetime.datetime | None,
        base_status: dict[str, Any],
        finished: datetime.datetime | None = None,
    ) -> None:
        run = work.run
        finished = finished or _now()
        run.exit_code, run.reason, run.message = exit_code, reason, message
        run.finished_at = run.finished_at or finished
        if not work.report:
            return
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "finishedAt": _timestamp(finished),
            "startedAt": _timestamp(started or finished),
        }
        if message:
            terminated["message"] = message
        if started is not None:
            terminated["containerID"] = _container_id(run)
        phase = "Succeeded" if exit_code == 0 else "Failed"
        status = {
            **base_status,
            "phase": phase,
            "conditions": _conditions(ready=False, started=started, phase=phase, container=run.container),
            "containerStatuses": [_container_status(run, container, {"terminated": terminated}, False)],
        }
        self._patch_status(pod, {"status": status})
        if work.delete_after:
            self._delete_now(pod)

    def _patch_waiting(
        self, pod: Pod, container: dict[str, Any], reason: str, message: str, base_status: dict[str, Any]
    ) -> None:
        state = {"waiting": {"reason": reason, "message": message}}
        self._patch_status(
            pod,
            {
                "status": {
                    **base_status,
                    "phase": "Pending",
                    "conditions": _conditions(ready=False, started=None, container=container["name"]),
                    "containerStatuses": [_container_status(None, container, state, False)],
                }
            },
        )

    # -- API writes ------------------------------------------------------------------------------

    def _patch_status(self, pod: Pod, patch: dict[str, Any]) -> None:
        patch = {"metadata": {"uid": pod["metadata"]["uid"]}, **patch}  # only this incarnation of the Pod
        self.api.call(
            "PATCH",
            f"{_pod_path(pod)}/status",
            patch,
            content_type="application/strategic-merge-patch+json",
            ok=(404, 409),
        )

    def _delete_now(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if uid in self._finished_deleting:
                return
            self._finished_deleting.add(uid)
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        self.api.call("DELETE", _pod_path(pod), body, ok=(404, 409))

    def _register_node(self) -> None:
        now = _timestamp(_now())
        capacity = {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "64Gi"}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "vividflow.test/fake-kubelet": "true",
                },
            },
        }
        self.api.call("POST", "/api/v1/nodes", node, ok=(409,))
        status = {
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.node_name},
                ],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "the fake kubelet is posting ready status",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "nodeInfo": {
                    "kubeletVersion": "v0.0.0-fake",
                    "kubeProxyVersion": "",
                    "containerRuntimeVersion": "fake://local-processes",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "osImage": "local processes",
                    "kernelVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }
        self.api.call(
            "PATCH",
            f"/api/v1/nodes/{quote(self.node_name)}/status",
            status,
            content_type="application/strategic-merge-patch+json",
        )

    # -- env -------------------------------------------------------------------------------------

    def _container_env(
        self, pod: Pod, container: dict[str, Any], pod_ip: str, *, contained: bool = False
    ) -> dict[str, str]:
        """The container's env; a process's over ``base_env`` and its ServiceAccount's KUBECONFIG, a
        container's (``contained``) with KUBERNETES_SERVICE_HOST/PORT (its token is mounted)."""
        namespace = pod["metadata"]["namespace"]
        own: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                ref = source["secretRef"]
                data = self._object_data("secrets", namespace, ref["name"], ref.get("optional", False))
            elif "configMapRef" in source:
                ref = source["configMapRef"]
                data = self._object_data("configmaps", namespace, ref["name"], ref.get("optional", False))
            else:
                continue
            own.update({prefix + key: value for key, value in (data or {}).items()})
        for item in container.get("env", []):
            if "valueFrom" in item:
                value = self._env_value_from(pod, item["valueFrom"], pod_ip)
                if value is None:
                    continue
            else:
                value = _expand(item.get("value", ""), own)
            own[item["name"]] = value
        name = pod["metadata"]["name"]
        if contained:
            return {**self._kubernetes_service_env(), **own, "HOSTNAME": name}
        return {**self.base_env, **self._service_account_env(pod), **own, "HOSTNAME": name}

    def _launch(
        self,
        run: ContainerRun,
        pod: Pod,
        container: dict[str, Any],
        command: list[str],
        args: list[str],
        env: dict[str, str],
    ) -> ContainerLaunch:
        mount_token = pod["spec"].get("automountServiceAccountToken") is not False
        return ContainerLaunch(
            pod=pod,
            container=container,
            command=command,
            args=args,
            env=env,
            pod_dir=run.log_path.parent,
            log_path=run.log_path,
            termination_log_path=run.termination_log_path,
            service_account_dir=self._project_token(pod) if mount_token else None,
            object_data=self._object_data,
            api_get=lambda path: self.api.call("GET", path),
        )

    def _cluster(self) -> dict[str, Any]:
        """The kubeconfig's current cluster entry (``server``, ``certificate-authority-data``)."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
        cluster: dict[str, Any] = next(c for c in config["clusters"] if c["name"] == context["cluster"])
        return cluster

    def _kubernetes_service_env(self) -> dict[str, str]:
        """What in-cluster clients read (the ``kubernetes`` Service's env): the API server's address."""
        server = urllib3.util.parse_url(self._cluster()["cluster"]["server"])
        port = str(server.port or 443)
        return {
            "KUBERNETES_SERVICE_HOST": server.host or "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
        }

    def _project_token(self, pod: Pod) -> Path | None:
        """The Pod's projected ServiceAccount volume, as the kubelet writes it: ``token`` from the
        TokenRequest API bound to the Pod, ``ca.crt`` and ``namespace``; None without a ServiceAccount."""
        account = pod["spec"].get("serviceAccountName")
        if not self.project_tokens or not account:
            return None
        metadata = pod["metadata"]
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                },
            },
        }
        path = f"/api/v1/namespaces/{quote(metadata['namespace'])}/serviceaccounts/{quote(account)}/token"
        answer = self.api.call("POST", path, request, ok=(404,))
        if answer.get("kind") == "Status":
            return None  # no such ServiceAccount (the real kubelet would keep the Pod waiting)
        directory: Path = self.work_dir / "serviceaccount" / metadata["uid"]
        directory.mkdir(parents=True, exist_ok=True)
        cluster = self._cluster()["cluster"]
        ca = cluster.get("certificate-authority-data")
        files = {
            "token": answer["status"]["token"].encode(),
            "namespace": metadata["namespace"].encode(),
            "ca.crt": base64.b64decode(ca) if ca else Path(cluster["certificate-authority"]).read_bytes(),
        }
        for name, content in files.items():
            (directory / name).write_bytes(content)
            (directory / name).chmod(0o644)  # the projected volume's default mode
        directory.chmod(0o755)
        return directory

    def _service_account_env(self, pod: Pod) -> dict[str, str]:
        """``KUBECONFIG`` with a token bound to ``pod`` for its ServiceAccount (none if it has none)."""
        directory = self._project_token(pod)
        if directory is None:
            return {}
        account = pod["spec"]["serviceAccountName"]
        token = directory / "token"
        cluster = self._cluster()
        kubeconfig = directory / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "in-cluster", "cluster": cluster["cluster"]}],
                    "users": [{"name": account, "user": {"tokenFile": str(token)}}],
                    "contexts": [{"name": "pod", "context": {"cluster": "in-cluster", "user": account}}],
                    "current-context": "pod",
                }
            )
        )
        return {"KUBECONFIG": str(kubeconfig)}

    def _env_value_from(self, pod: Pod, source: dict[str, Any], pod_ip: str) -> str | None:
        namespace = pod["metadata"]["namespace"]
        for kind, resource in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if kind in source:
                ref = source[kind]
                optional = bool(ref.get("optional", False))
                data = self._object_data(resource, namespace, ref["name"], optional)
                if data is None:
                    return None
                if ref["key"] not in data:
                    if optional:
                        return None
                    singular = resource[:-1] if resource == "secrets" else "configmap"
                    raise ContainerConfigError(
                        f"couldn't find key {ref['key']} in {singular.capitalize()} {namespace}/{ref['name']}"
                    )
                return data[ref["key"]]
        if "fieldRef" in source:
            return _field_value(pod, source["fieldRef"]["fieldPath"], pod_ip)
        raise ContainerConfigError(f"the fake kubelet does not support env valueFrom {sorted(source)}")

    def _object_data(self, resource: str, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        path = f"/api/v1/namespaces/{quote(namespace)}/{resource}/{quote(name)}"
        obj = self.api.call("GET", path, ok=(404,))
        if obj.get("kind") == "Status":
            if optional:
                return None
            singular = "secret" if resource == "secrets" else "configmap"
            raise ContainerConfigError(f'{singular} "{name}" not found')
        data: dict[str, str] = dict(obj.get("stringData") or {})
        if resource == "secrets":
            for key, value in (obj.get("data") or {}).items():
                data[key] = base64.b64decode(value).decode(errors="replace")
        else:
            data.update(obj.get("data") or {})
        return data

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise KubeletError("the fake kubelet is not started")
        return self._work_dir

    def _next_pod_ip(self) -> str:
        with self._lock:
            self._ip_counter += 1
            n = self._ip_counter
        return f"10.244.{n // 250 % 250}.{n % 250 + 2}"

    def _record_error(self, message: str) -> None:
        log.warning("fake kubelet: %s", message)
        with self._lock:
            self.errors.append(message)


def _key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata", {})
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _pod_path(pod: Mapping[str, Any]) -> str:
    meta = pod["metadata"]
    return f"/api/v1/namespaces/{quote(meta['namespace'])}/pods/{quote(meta['name'])}"


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _container_id(run: ContainerRun) -> str:
    if run.container_id:
        return run.container_id
    return f"fake://{run.uid.replace('-', '')}{run.pid or 0:08x}"


def _container_status(
    run: ContainerRun | None, container: Mapping[str, Any], state: dict[str, Any], running: bool
) -> dict[str, Any]:
    image = container.get("image", "")
    status: dict[str, Any] = {
        "name": container["name"],
        "image": image,
        "imageID": "",
        "ready": running,
        "started": running,
        "restartCount": 0,
        "state": state,
    }
    if run is not None and run.started:
        status["imageID"] = run.image_id or f"fake://{image}@sha256:{'0' * 64}"
        status["containerID"] = _container_id(run)
    return status


def _conditions(
    *,
    ready: bool,
    started: datetime.datetime | None,
    phase: str | None = None,
    container: str = "",
) -> list[dict[str, Any]]:
    now = _timestamp(_now())
    if ready:
        extra: dict[str, str] = {}
    elif phase == "Succeeded":
        extra = {"reason": "PodCompleted"}
    else:
        extra = {"reason": "ContainersNotReady", "message": f"containers with unready status: [{container}]"}
    flag = "True" if ready else "False"
    return [
        {
            "type": "PodReadyToStartContainers",
            "status": "True" if started or ready else "False",
            "lastTransitionTime": now,
        },
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "Ready", "status": flag, "lastTransitionTime": now, **extra},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": now, **extra},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
    ]


def _termination_message(run: ContainerRun, container: Mapping[str, Any], *, failed: bool) -> str:
    try:
        with run.termination_log_path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - TERMINATION_MESSAGE_LIMIT))
            message = handle.read().decode(errors="replace")
    except OSError:
        message = ""
    if not message and failed and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        try:
            output = run.log_path.read_bytes()
        except OSError:
            output = b""
        tail = b"\n".join(output.splitlines()[-FALLBACK_LOG_LINES:])
        message = tail[-FALLBACK_LOG_BYTES:].decode(errors="replace")
    return message


def _field_value(pod: Pod, path: str, pod_ip: str) -> str:
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f"the fake kubelet does not support fieldRef {path!r}")
