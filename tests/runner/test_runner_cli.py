"""``python -m vividflow.runner`` as a Kubernetes Job's container runs it: a subprocess configured by
``VIVID_*`` variables that prints its result, writes it to the termination log and exits 0, 1 or 2."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vividflow.jobspec import (
    FailureReason,
    JobParameters,
    JobSpec,
    ModelName,
    RunnerExit,
    RunResult,
    WanParams,
)
from vividflow.runner.video import probe_mp4

REPO_ROOT = Path(__file__).resolve().parents[2]
PUBLIC_URL = "http://vivid.test:8000"
PROG = "python -m vividflow.runner"
TERMINATION_LOG_BYTES = 4096


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((40, 30)).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Env:
    """A runner's environment in ``tmp_path``: its settings, an input image and its termination log."""

    tmp_path: Path
    vars: dict[str, str]

    @property
    def data_dir(self) -> Path:
        return self.tmp_path / "data"

    @property
    def input(self) -> Path:
        return self.tmp_path / "input.png"

    @property
    def termination_log(self) -> Path:
        return self.tmp_path / "termination-log"

    def output(self, job_id: str) -> Path:
        return self.data_dir / "results" / f"{job_id}.mp4"

    def spec(self, job_id: str = "job-1", input_uri: str | None = None, **params: Any) -> JobSpec:
        return JobSpec(
            job_id=job_id,
            owner="user-1",
            model=ModelName.WAN21,
            prompt="a lighthouse in a storm",
            input_uri=input_uri or str(self.input),
            parameters=JobParameters(
                wan=WanParams.model_validate({"width": 32, "height": 32, "length": 9, "steps": 2, **params})
            ),
            output_uri=str(self.output(job_id)),
            created_at=datetime.now(UTC),
        )

    def spec_file(self, spec: JobSpec | str) -> Path:
        path = self.tmp_path / "spec.json"
        path.write_text(spec if isinstance(spec, str) else spec.model_dump_json(by_alias=True))
        return path


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    log_bytes: bytes

    @property
    def last_line(self) -> str:
        return self.stdout.strip().splitlines()[-1]

    @property
    def result(self) -> RunResult:
        """The result in the termination log, checked to be the one printed and to fit Kubernetes."""
        assert len(self.log_bytes) <= TERMINATION_LOG_BYTES
        assert self.log_bytes.decode() == self.last_line
        return RunResult.model_validate(json.loads(self.log_bytes))


@pytest.fixture
def env(tiny_wan_model_dir: Path, tmp_path: Path) -> Env:
    variables = {key: value for key, value in os.environ.items() if not key.startswith("VIVID_")}
    variables |= {
        "VIVID_WAN_MODEL": str(tiny_wan_model_dir),
        "VIVID_DATA_DIR": str(tmp_path / "data"),
        "VIVID_PUBLIC_URL": PUBLIC_URL,
        "VIVID_TERMINATION_LOG": str(tmp_path / "termination-log"),
        "OMP_NUM_THREADS": "1",
    }
    created = Env(tmp_path, variables)
    created.input.write_bytes(png_bytes())
    return created


def run_cli(env: Env, *args: str, **extra_env: str) -> Run:
    done = subprocess.run(
        [sys.executable, "-m", "vividflow.runner", *args],
        cwd=REPO_ROOT,
        env=env.vars | extra_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    log = env.termination_log.read_bytes() if env.termination_log.exists() else b""
    return Run(done.returncode, done.stdout, done.stderr, log)


def test_success_prints_and_records_the_result_and_exits_0(env: Env) -> None:
    spec = env.spec("job-ok", length=13)

    run = run_cli(env, "--spec-file", str(env.spec_file(spec)))

    assert run.returncode == 0, run.stderr[-3000:]
    result = run.result
    assert result.ok
    assert result.output_uri == str(env.output("job-ok"))
    assert result.result_url == f"{PUBLIC_URL}/files/results/job-ok.mp4"
    assert result.metrics is not None and result.metrics.total_time >= result.metrics.generation_time
    info = probe_mp4(env.output("job-ok"))
    assert (info.frames, info.width, info.height) == (13, 32, 32)
    assert "progress 100%" in run.stderr.splitlines()[-1]
    assert "Traceback" not in run.stderr


def test_invalid_input_exits_2(env: Env) -> None:
    env.input.write_bytes(b"GIF89a not an accepted image")

    run = run_cli(env, "--spec-json", env.spec("job-gif").model_dump_json())

    assert run.returncode == 2, run.stderr[-3000:]
    result = run.result
    assert result.reason is FailureReason.INVALID_INPUT
    assert result.error_message == "Input image: image must be PNG, JPEG or WebP"
    assert not env.output("job-gif").exists()


def test_a_model_that_cannot_load_exits_3(env: Env) -> None:
    missing = env.tmp_path / "no-such-model"

    run = run_cli(
        env, "--spec-file", str(env.spec_file(env.spec("job-nomodel"))), VIVID_WAN_MODEL=str(missing)
    )

    assert run.returncode == RunnerExit.MODEL_LOAD_FAILED == 3, run.stderr[-3000:]
    result = run.result
    assert result.reason is FailureReason.MODEL_LOAD_FAILED
    assert result.error_message == f"Wan model directory {missing} does not exist"
    assert not env.output("job-nomodel").exists()


def test_an_overlong_failure_still_fits_the_termination_log_as_whole_json(env: Env) -> None:
    """Kubernetes keeps 4096 bytes of a termination message; the message is shortened, not the JSON."""
    missing = "/no-such-dir/" + "/".join(["é" * 100] * 20)  # ~4 KB of UTF-8, within PATH_MAX

    run = run_cli(env, "--spec-file", str(env.spec_file(env.spec("job-long"))), VIVID_WAN_MODEL=missing)

    assert run.returncode == RunnerExit.MODEL_LOAD_FAILED, run.stderr[-3000:]
    assert len(run.log_bytes) <= TERMINATION_LOG_BYTES
    logged = RunResult.model_validate(json.loads(run.log_bytes))
    printed = RunResult.model_validate(json.loads(run.last_line))
    assert logged.reason is printed.reason is FailureReason.MODEL_LOAD_FAILED
    assert printed.error_message == f"Wan model directory {missing} does not exist"
    assert logged.error_message is not None and logged.error_message.endswith("…")
    assert printed.error_message.startswith(logged.error_message.removesuffix("…"))


@pytest.mark.parametrize(
    ("write_spec", "expected"),
    [
        (lambda env: str(env.spec_file('{"jobId": "job-1", ')), "invalid job spec: Invalid JSON: "),
        (
            lambda env: str(
                env.spec_file(env.spec().model_dump_json(by_alias=True).replace('"wan2.1"', '"wan9"'))
            ),
            "invalid job spec: model: Input should be 'wan2.1' or 'veo3.1'",
        ),
        (
            lambda env: str(env.tmp_path / "missing.json"),
            "cannot read the job spec file {tmp}/missing.json: No such file or directory",
        ),
    ],
    ids=["not-json", "unknown-model", "missing-file"],
)
def test_a_malformed_spec_is_one_line_of_error_and_exit_2(
    env: Env, write_spec: Callable[[Env], str], expected: str
) -> None:
    spec_path: str = write_spec(env)

    run = run_cli(env, "--spec-file", spec_path)

    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    error_lines = [line for line in run.stderr.splitlines() if line.startswith(f"{PROG}: ")]
    assert len(error_lines) == 1
    expected = expected.format(tmp=env.tmp_path)
    assert error_lines[0].startswith(f"{PROG}: {expected}")
    result = run.result
    assert result.reason is FailureReason.INVALID_INPUT
    assert result.error_message is not None and result.error_message.startswith(expected)
    assert f"{PROG}: {result.error_message}" == error_lines[0]
