"""The embedded executor: queued jobs run in submission order on ``VIVID_WORKERS`` worker
processes, each a warm runner isolated from the API process.

The queue is the jobs table itself (claimed atomically), so a restart loses nothing: queued jobs
simply run, and jobs that were processing when the server died are failed with a clear message
(their worker and its partial output are gone; re-running them silently could bill twice).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from sqlalchemy.orm import Session, sessionmaker

from vividflow.apiserver.services import jobs
from vividflow.jobspec import FailureReason, JobSpec, RunResult
from vividflow.runner import worker
from vividflow.settings import Settings

log = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = "The server restarted while this job was processing. Please submit it again."
IDLE_POLL_SECONDS = 1.0
"""Also picks up jobs queued by other processes (e.g. a second API process on the same DB)."""


def _crash_result(exitcode: int | None) -> RunResult:
    if exitcode == -signal.SIGKILL:
        return RunResult.failure(
            FailureReason.OUT_OF_MEMORY,
            "The job's worker process was killed (SIGKILL), most likely for running out of memory.",
        )
    return RunResult.failure(
        FailureReason.WORKER_CRASHED, f"The job's worker process crashed (exit code {exitcode})."
    )


class _WorkerSlot(threading.Thread):
    """Feeds one worker process, one job at a time, and respawns it if it dies."""

    def __init__(self, index: int, backend: LocalBackend) -> None:
        super().__init__(name=f"vividflow-slot-{index}", daemon=True)
        self._backend = backend
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    def run(self) -> None:
        backend = self._backend
        while not backend.stopping.is_set():
            with backend.session_factory.begin() as session:
                job = jobs.claim_next_queued(session)
                spec = jobs.job_spec(job, backend.settings.job_deadline_seconds) if job else None
            if spec is None:
                backend.wait_for_work()
                continue
            log.info("job %s started (%s)", spec.job_id, spec.model)
            result = self._execute(spec)
            with backend.session_factory.begin() as session:
                jobs.record_result(session, spec.job_id, result)
            log.info("job %s finished: %s", spec.job_id, "completed" if result.ok else result.reason)
        self._shutdown_process()

    def _execute(self, spec: JobSpec) -> RunResult:
        conn, process = self._ensure_process()
        conn.send(spec.model_dump_json())
        deadline = time.monotonic() + spec.deadline_seconds
        while True:
            try:
                ready = conn.poll(0.5)
                message = conn.recv() if ready else None
            except (EOFError, OSError):
                return self._lost(process)
            if message is not None:
                kind, payload = message
                if kind == "result":
                    return RunResult.model_validate_json(payload)
                with self._backend.session_factory.begin() as session:
                    jobs.record_progress(session, spec.job_id, int(payload))
                continue
            if not process.is_alive():
                return self._lost(process)
            if self._backend.stopping.is_set():
                self._kill()
                return RunResult.failure(FailureReason.INTERRUPTED, INTERRUPTED_MESSAGE)
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
                args=(child, self._backend.settings),
                name=f"{self.name}-worker",
                daemon=True,
            )
            process.start()
            child.close()
            self._process, self._conn = process, parent
        return self._conn, self._process

    def _lost(self, process: BaseProcess) -> RunResult:
        process.join(timeout=5)
        exitcode = process.exitcode
        self._process, self._conn = None, None
        log.warning("worker process died with exit code %s", exitcode)
        return _crash_result(exitcode)

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(timeout=5)
        self._process, self._conn = None, None

    def _shutdown_process(self) -> None:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._process.join(timeout=5)
        self._kill()


class LocalBackend:
    name = "local"

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.parallelism = settings.workers
        self.stopping = threading.Event()
        self._work = threading.Condition()
        self._slots: list[_WorkerSlot] = []

    def start(self) -> None:
        with self.session_factory.begin() as session:
            interrupted = jobs.fail_processing(session, INTERRUPTED_MESSAGE, FailureReason.INTERRUPTED.value)
        if interrupted:
            log.warning("%d job(s) were processing when the server stopped; marked failed", interrupted)
        self.stopping.clear()
        self._slots = [_WorkerSlot(index, self) for index in range(self.settings.workers)]
        for slot in self._slots:
            slot.start()

    def stop(self) -> None:
        self.stopping.set()
        with self._work:
            self._work.notify_all()
        for slot in self._slots:
            slot.join(timeout=15)
        self._slots = []

    def wait_for_work(self) -> None:
        with self._work:
            self._work.wait(IDLE_POLL_SECONDS)

    def submitted(self, job_id: str) -> None:
        with self._work:
            self._work.notify_all()

    def cancelled(self, job_id: str) -> None:
        """Nothing to do: a cancelled job is no longer queued, so no slot will claim it."""

    def is_ready(self) -> bool:
        return all(slot.is_alive() for slot in self._slots)
