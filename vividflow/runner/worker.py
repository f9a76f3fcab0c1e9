"""A worker process of the embedded executor: a warm :class:`Runner` fed jobs over a pipe.

Messages to the worker: a JobSpec as JSON, or ``None`` to stop. Messages back:
``("progress", percent)`` and ``("result", RunResult JSON)``. The server sets ``cancel`` (an Event
shared with the worker, cleared before each job) to stop the running job at its next step or poll.

A worker never outlives its server: on Linux the kernel kills it when the server's thread that
started it goes (``PR_SET_PDEATHSIG``), and everywhere a watchdog thread exits the moment the worker
is re-parented (the server died, even by ``kill -9``). Without a server nobody would record its
result, and a job taken back by another server must not run twice.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Protocol

from vividflow.jobspec import JobSpec, RunnerExit
from vividflow.logs import configure_logging, log_context
from vividflow.runner.core import Runner
from vividflow.settings import Settings


class CancelEvent(Protocol):
    def is_set(self) -> bool: ...


PR_SET_PDEATHSIG = 1
PARENT_CHECK_SECONDS = 0.5


def limit_memory(megabytes: int | None) -> None:
    """Cap the address space, so a runaway job fails inside this process, not the machine."""
    if megabytes:
        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def die_with_parent(parent_pid: int) -> None:
    """Exit as soon as ``parent_pid`` is no longer this process's parent."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(RunnerExit.ORPHANED)

    def watch() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(PARENT_CHECK_SECONDS)
        os._exit(RunnerExit.ORPHANED)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(conn: Connection, settings: Settings, parent_pid: int, cancel: CancelEvent) -> None:
    die_with_parent(parent_pid)
    configure_logging(settings, "worker")
    limit_memory(settings.worker_memory_limit_mb)
    runner = Runner(settings)
    while True:
        message = conn.recv()
        if message is None:
            return
        spec = JobSpec.model_validate_json(message)

        def report(percent: int) -> None:
            conn.send(("progress", percent))

        with log_context(job_id=spec.job_id):
            result = runner.run(spec, on_progress=report, should_cancel=cancel.is_set)
        conn.send(("result", result.model_dump_json()))
