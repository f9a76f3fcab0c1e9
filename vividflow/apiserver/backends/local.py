"""The embedded executor: queued jobs run in submission order on ``VIVID_WORKERS`` worker
processes, each a warm runner isolated from the API process.

The queue is the jobs table itself (claimed atomically), so several servers may share one database
(replicas, a rolling restart): each executor has an identity and holds a *lease* on every job it
runs, renewed every third of ``lease_seconds`` while the job runs. Only a job whose lease has expired
(its executor died without a word) is taken back, by whichever server notices first: queued again
while it has attempts left (``job_max_attempts``), else failed ``interrupted`` and refunded. A server
that stops cleanly hands its running jobs back the same way at once. An executor that lost a job's
lease can no longer write its progress or result.

A worker process dies with its server, however the server dies (a parent-death signal and a watch
on the parent), so a job never runs twice at once.

While a job runs, its slot looks at the job's row every second: once the job is no longer this
executor's (cancelled while running, on any server; or taken back after a lost lease) the worker is
told to stop at its next step or poll, and killed if it has not within ``cancel_grace_seconds``. A
cancel made on this server stops the worker at once. Whatever it returns then is discarded.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from sqlalchemy.orm import Session, sessionmaker

from vividflow.apiserver.identity import lease_holder
from vividflow.apiserver.metrics import (
    EXECUTOR_MODEL_LOAD_SECONDS,
    EXECUTOR_MODEL_LOADS,
    EXECUTOR_WORKER_CRASHES,
    EXECUTOR_WORKERS_ALIVE,
)
from vividflow.apiserver.services import jobs, leases
from vividflow.jobspec import FailureReason, JobSpec, RunResult
from vividflow.logs import log_context
from vividflow.runner import worker
from vividflow.settings import Settings
from vividflow.storage import locations
from vividflow.storage.errors import StorageError

log = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = (
    "The server running this job stopped, and the job had no attempts left. Please submit it again."
)
IDLE_POLL_SECONDS = 1.0
"""Also picks up jobs queued by other processes (e.g. a second API process on the same DB)."""
OWNERSHIP_CHECK_SECONDS = 1.0
"""How often a running job's row is checked for a cancel made elsewhere (or a lost lease)."""


class _Abandoned(Exception):
    """The job stopped being this executor's while it ran (cancelled, or taken back)."""


def _crash_result(exitcode: int | None) -> RunResult:
    if exitcode == -signal.SIGKILL:
        return RunResult.failure(
            FailureReason.OUT_OF_MEMORY,
            "The job's worker process was killed (SIGKILL), most likely for running out of memory.",
        )
    return RunResult.failure(
        FailureReason.WORKER_CRASHED, f"The job's worker process crashed (exit code {exitcode})."
    )


def _count_model_load(spec: JobSpec, result: RunResult) -> None:
    load_time = result.metrics.model_load_time if result.metrics else None
    if load_time is not None:
        EXECUTOR_MODEL_LOADS.labels(model=spec.model.value).inc()
        EXECUTOR_MODEL_LOAD_SECONDS.labels(model=spec.model.value).observe(load_time)


class _WorkerSlot(threading.Thread):
    """Feeds one worker process, one job at a time, and respawns it if it dies."""

    def __init__(self, index: int, backend: LocalBackend) -> None:
        super().__init__(name=f"vividflow-slot-{index}", daemon=True)
        self._backend = backend
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._cancel = multiprocessing.get_context("spawn").Event()
        """Shared with the worker: set to stop the job it runs."""
        self.job_id: str | None = None
        """The job this slot runs now."""
        self._stop_asked = threading.Event()

    def run(self) -> None:
        backend = self._backend
        settings = backend.settings
        while not backend.stopping.is_set():
            # A live worker first, then the claim: a job is never processing without one.
            self._ensure_process()
            if backend.stopping.is_set():
                break
            with backend.session_factory.begin() as session:
                job = leases.claim_next_queued(session, backend.identity, settings.lease_seconds)
                spec = jobs.job_spec(job, settings.job_deadline_seconds) if job else None
            if spec is None:
                backend.wait_for_work()
                continue
            with log_context(job_id=spec.job_id):
                self._run_job(spec)
        self._shutdown_process()

    def _run_job(self, spec: JobSpec) -> None:
        """Run one claimed job and record how it ended."""
        backend = self._backend
        settings = backend.settings
        log.info("job %s started (%s)", spec.job_id, spec.model)
        self.job_id = spec.job_id
        try:
            result = self._execute(spec)
        except _Abandoned:
            log.info("job %s stopped: it was cancelled or is no longer this server's", spec.job_id)
            self._discard_output(spec)
            return
        finally:
            self.job_id = None
        with backend.session_factory.begin() as session:
            if result is None:  # the server is stopping: hand the job back
                leases.release(
                    session, spec.job_id, backend.identity, settings.job_max_attempts, INTERRUPTED_MESSAGE
                )
                log.info("job %s handed back: the server is stopping", spec.job_id)
            elif jobs.record_result(session, spec.job_id, result, backend.identity):
                log.info("job %s finished: %s", spec.job_id, "completed" if result.ok else result.reason)
            else:
                log.warning("job %s: result discarded, this executor no longer holds it", spec.job_id)
                self._discard_output(spec)

    def stop_job(self, job_id: str) -> None:
        """Stop ``job_id`` if this slot runs it (it was cancelled here)."""
        if self.job_id == job_id:
            self._stop_asked.set()

    def _still_mine(self, job_id: str) -> bool:
        with self._backend.session_factory() as session:
            return leases.holds(session, job_id, self._backend.identity)

    def _execute(self, spec: JobSpec) -> RunResult | None:
        """The job's result; None if the server began stopping first (the worker is killed).
        Raises _Abandoned when the job stopped being ours (the worker stopped or killed)."""
        self._cancel.clear()
        self._stop_asked.clear()
        conn, process = self._ensure_process()
        conn.send(spec.model_dump_json())
        deadline = time.monotonic() + spec.deadline_seconds
        next_check = time.monotonic() + OWNERSHIP_CHECK_SECONDS
        stop_by: float | None = None
        while True:
            now = time.monotonic()
            if stop_by is None and (
                self._stop_asked.is_set() or (now >= next_check and not self._still_mine(spec.job_id))
            ):
                self._cancel.set()  # the worker stops at its next step or poll
                stop_by = now + self._backend.settings.cancel_grace_seconds
            if now >= next_check:
                next_check = now + OWNERSHIP_CHECK_SECONDS
            if stop_by is not None and now > stop_by:
                log.warning("job %s: the worker did not stop after the cancel; killing it", spec.job_id)
                self._kill()
                raise _Abandoned
            try:
                ready = conn.poll(0.5)
                message = conn.recv() if ready else None
            except (EOFError, OSError):
                return self._lost(process)
            if message is not None:
                kind, payload = message
                if kind == "result":
                    if stop_by is not None:
                        raise _Abandoned
                    result = RunResult.model_validate_json(payload)
                    _count_model_load(spec, result)
                    return result
                if stop_by is not None:
                    continue
                with self._backend.session_factory.begin() as session:
                    jobs.record_progress(session, spec.job_id, int(payload), self._backend.identity)
                continue
            if not process.is_alive():
                return self._lost(process)
            if self._backend.stopping.is_set():
                self._kill()
                return None
            if time.monotonic() > deadline:
                self._kill()
                return RunResult.failure(
                    FailureReason.TIMEOUT,
                    f"The job did not finish within its {spec.deadline_seconds} s limit.",
                )

    def _ensure_process(self) -> tuple[Connection, BaseProcess]:
        if self._process is None or not self._process.is_alive() or self._conn is None:
            context = multiprocessing.get_context("spawn")
            parent, child = context.Pipe()
            process = context.Process(
                target=worker.serve,
                args=(child, self._backend.settings, os.getpid(), self._cancel),
                name=f"{self.name}-worker",
                daemon=True,
            )
            process.start()
            child.close()
            self._forget_process()
            self._process, self._conn = process, parent
            EXECUTOR_WORKERS_ALIVE.inc()
        return self._conn, self._process

    def _discard_output(self, spec: JobSpec) -> None:
        """A result written for a job that is no longer ours is not kept."""
        try:
            locations.delete_stored(spec.output_uri, self._backend.settings)
        except StorageError as error:
            log.warning("job %s: could not remove its discarded output: %s", spec.job_id, error.message)

    def _lost(self, process: BaseProcess) -> RunResult:
        process.join(timeout=5)
        exitcode = process.exitcode
        self._forget_process()
        EXECUTOR_WORKER_CRASHES.inc()
        log.warning("worker process died with exit code %s", exitcode)
        return _crash_result(exitcode)

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(timeout=5)
        self._forget_process()

    def _forget_process(self) -> None:
        if self._process is not None:
            EXECUTOR_WORKERS_ALIVE.dec()
        self._process, self._conn = None, None

    def _shutdown_process(self) -> None:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._process.join(timeout=5)
        self._kill()


class LocalBackend:
    name = "local"
    network_calls = False

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.parallelism = settings.workers
        self.identity = lease_holder("executor")
        self.stopping = threading.Event()
        self._work = threading.Condition()
        self._slots: list[_WorkerSlot] = []
        self._keeper: threading.Thread | None = None
        self.lease_rounds = 0
        """Rounds of the lease keeper so far (renew own leases, recover expired ones): for tests."""

    def start(self) -> None:
        self.stopping.clear()
        self.keep_leases()
        self._slots = [_WorkerSlot(index, self) for index in range(self.settings.workers)]
        for slot in self._slots:
            slot.start()
        self._keeper = threading.Thread(target=self._keep_leases_loop, name="vividflow-leases", daemon=True)
        self._keeper.start()

    def stop(self) -> None:
        self.stopping.set()
        with self._work:
            self._work.notify_all()
        for slot in self._slots:
            slot.join(timeout=15)
        self._slots = []
        if self._keeper is not None:
            self._keeper.join(timeout=10)
            self._keeper = None

    def keep_leases(self) -> None:
        """Renew the leases of this executor's jobs; take back jobs whose lease expired."""
        with self.session_factory.begin() as session:
            leases.renew_leases(session, self.identity, self.settings.lease_seconds)
            requeued, failed = leases.recover_expired(
                session, self.settings.job_max_attempts, INTERRUPTED_MESSAGE
            )
        if requeued or failed:
            log.warning(
                "took back %d job(s) whose executor stopped: %d queued again, %d failed", requeued + failed,
                requeued, failed,
            )  # fmt: skip
            self.submitted("")
        self.lease_rounds += 1

    def _keep_leases_loop(self) -> None:
        interval = self.settings.lease_seconds / 3
        while not self.stopping.wait(interval):
            try:
                self.keep_leases()
            except Exception:  # a database hiccup: the next round tries again, well within the lease
                log.exception("renewing job leases failed")

    def wait_for_work(self) -> None:
        with self._work:
            self._work.wait(IDLE_POLL_SECONDS)

    def submitted(self, job_id: str) -> None:
        with self._work:
            self._work.notify_all()

    def cancelled(self, job_id: str) -> None:
        """A cancelled queued job is never claimed; a running one is stopped by its slot (here at
        once; on another server at that slot's next look at the job)."""
        for slot in self._slots:
            slot.stop_job(job_id)

    def is_ready(self) -> bool:
        alive = self._keeper is not None and self._keeper.is_alive()
        return alive and all(slot.is_alive() for slot in self._slots)
