"""A worker process of the embedded executor: a warm :class:`Runner` fed jobs over a pipe.

Messages to the worker: a JobSpec as JSON, or ``None`` to stop. Messages back:
``("progress", percent)`` and ``("result", RunResult JSON)``.
"""

from __future__ import annotations

import logging
import resource
from multiprocessing.connection import Connection

from vividflow.jobspec import JobSpec
from vividflow.runner.core import Runner
from vividflow.settings import Settings


def limit_memory(megabytes: int | None) -> None:
    """Cap the address space, so a runaway job fails inside this process, not the machine."""
    if megabytes:
        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def serve(conn: Connection, settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    limit_memory(settings.worker_memory_limit_mb)
    runner = Runner(settings)
    while True:
        message = conn.recv()
        if message is None:
            return
        spec = JobSpec.model_validate_json(message)

        def report(percent: int) -> None:
            conn.send(("progress", percent))

        result = runner.run(spec, on_progress=report)
        conn.send(("result", result.model_dump_json()))
