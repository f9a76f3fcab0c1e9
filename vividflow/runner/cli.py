"""Run one job from a spec file or JSON; print and record the result for whoever started us.

Exit codes (``jobspec.RunnerExit``): 0 success, 2 invalid input, 3 model load failed, 4 out of memory
(none of them worth a retry: a Job's podFailurePolicy fails at once), 1 any other failure. A spec that
cannot be read or is not a valid JobSpec is invalid input: one line on stderr, exit 2.

SIGTERM (a deleted Pod: the job was cancelled) stops the job at its next step or poll, and nothing is
written after it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from vividflow.jobspec import FailureReason, JobSpec, RunnerExit, RunResult
from vividflow.logs import configure_logging, log_context
from vividflow.runner.core import Runner
from vividflow.runner.progress import progress_reporter
from vividflow.settings import Settings

TERMINATION_LOG_BYTES = 4096
"""Kubernetes keeps at most this much of a termination message."""
_SPEC_ERROR_CHARS = 1000


class InvalidSpec(ValueError):
    """The job spec could not be read or is not a valid JobSpec (a one-line reason)."""


def exit_code(result: RunResult) -> int:
    return RunnerExit.OK if result.ok else RunnerExit.for_reason(result.reason)


def termination_message(result: RunResult) -> str:
    """The result as JSON within :data:`TERMINATION_LOG_BYTES`; an over-long error message is
    shortened (never the JSON cut), so whoever reads the message can still parse it."""
    text = result.model_dump_json(exclude_none=True)
    message = result.error_message or ""
    while len(text.encode()) > TERMINATION_LOG_BYTES and message:
        excess = len(text.encode()) - TERMINATION_LOG_BYTES
        message = message[: max(0, len(message) - excess - 1)]
        shortened = result.model_copy(update={"error_message": message + "…"})
        text = shortened.model_dump_json(exclude_none=True)
    return text


def write_termination_log(result: RunResult, path: Path) -> None:
    """Kubernetes shows this file's content as the container's termination message (4 KiB max)."""
    try:
        path.write_text(termination_message(result), encoding="utf-8")
    except OSError:
        logging.getLogger(__name__).debug("no termination log at %s", path)


def read_spec(spec_file: Path | None, spec_json: str | None) -> JobSpec:
    """The JobSpec from a file or a JSON string; :class:`InvalidSpec` says in one line what is wrong."""
    if spec_file is not None:
        try:
            text = spec_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
            raise InvalidSpec(f"cannot read the job spec file {spec_file}: {reason}") from None
    else:
        text = spec_json or ""
    try:
        return JobSpec.model_validate_json(text)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            where = ".".join(str(part) for part in item["loc"])
            problems.append(f"{where}: {item['msg']}" if where else item["msg"])
        summary = " ".join(f"invalid job spec: {'; '.join(problems)}".split())
        if len(summary) > _SPEC_ERROR_CHARS:
            summary = summary[: _SPEC_ERROR_CHARS - 1] + "…"
        raise InvalidSpec(summary) from None


def stop_on_sigterm() -> threading.Event:
    """An event set by SIGTERM instead of dying at once, so the job stops cleanly at its next step."""
    terminated = threading.Event()

    def handle(signum: int, frame: object) -> None:
        logging.getLogger(__name__).info("SIGTERM: stopping the job")
        terminated.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handle)
    return terminated


def videojob_of(settings: Settings) -> str | None:
    """``namespace/name`` of the VideoJob this runner reports onto (in a Pod), else None."""
    if not settings.videojob_name:
        return None
    return f"{settings.videojob_namespace or settings.kube_namespace}/{settings.videojob_name}"


def main(argv: list[str] | None = None, started: float | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vividflow.runner", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec-file", type=Path, help="a JobSpec as a JSON file")
    source.add_argument("--spec-json", help="a JobSpec as a JSON string")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings, "runner")
    try:
        spec = read_spec(args.spec_file, args.spec_json)
    except InvalidSpec as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        result = RunResult.failure(FailureReason.INVALID_INPUT, str(error))
    else:
        reporter = progress_reporter(settings)  # in a Pod: onto the VideoJob's status
        terminated = stop_on_sigterm()

        def on_progress(percent: int) -> None:
            logging.info("progress %d%%", percent)
            if reporter is not None:
                reporter(percent)

        def should_cancel() -> bool:
            return terminated.is_set() or (reporter is not None and reporter.cancel_requested)

        try:
            with log_context(job_id=spec.job_id, videojob=videojob_of(settings)):
                result = Runner(settings, started=started).run(
                    spec, on_progress=on_progress, should_cancel=should_cancel
                )
        finally:
            if reporter is not None:
                reporter.close()
    write_termination_log(result, settings.termination_log)
    print(result.model_dump_json(exclude_none=True))
    sys.exit(exit_code(result))
