"""Run one job from a spec file or JSON; print and record the result for whoever started us.

Exit codes: 0 success, 2 invalid input (not worth a retry), 1 any other failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vividflow.jobspec import FailureReason, JobSpec, RunResult
from vividflow.runner.core import Runner
from vividflow.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_INVALID_INPUT = 0, 1, 2


def exit_code(result: RunResult) -> int:
    if result.ok:
        return EXIT_OK
    return EXIT_INVALID_INPUT if result.reason is FailureReason.INVALID_INPUT else EXIT_FAILED


def write_termination_log(result: RunResult, path: Path) -> None:
    """Kubernetes shows this file's content as the container's termination message (4 KiB max)."""
    try:
        path.write_text(result.model_dump_json(exclude_none=True)[:4096])
    except OSError:
        logging.getLogger(__name__).debug("no termination log at %s", path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vividflow.runner", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec-file", type=Path, help="a JobSpec as a JSON file")
    source.add_argument("--spec-json", help="a JobSpec as a JSON string")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s runner %(levelname)s %(name)s: %(message)s")

    settings = Settings()
    text = args.spec_file.read_text() if args.spec_file else args.spec_json
    spec = JobSpec.model_validate_json(text)
    result = Runner(settings).run(spec, on_progress=lambda p: logging.info("progress %d%%", p))
    write_termination_log(result, settings.termination_log)
    print(result.model_dump_json(exclude_none=True))
    sys.exit(exit_code(result))
