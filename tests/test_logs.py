"""vividflow.logs: the JSON and text lines, the job context (per thread, per asyncio task), the masking
of secrets, the automatic format choice and uvicorn's configuration, each through the real logging
machinery (``dictConfig``, handlers, filters, formatters) writing into a stream the test reads."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import logging.handlers
import os
import re
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pythonjsonlogger.json import JsonFormatter
from standardwebhooks import Webhook

from vividflow.apiserver.security import display_prefix, generate_key
from vividflow.apiserver.services.webhooks import new_secret
from vividflow.log_secrets import mask_secrets
from vividflow.logs import (
    ContextFilter,
    JsonLogFormatter,
    choose_format,
    configure_logging,
    current_log_context,
    log_context,
    uvicorn_log_config,
)
from vividflow.runner.cli import videojob_of
from vividflow.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
Configure = Callable[..., io.StringIO]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the logging configuration (every logger's handlers, level, propagation) back afterwards."""
    manager = logging.Logger.manager
    loggers = [
        logging.getLogger(),
        *(x for x in manager.loggerDict.values() if isinstance(x, logging.Logger)),
    ]
    saved = [(x, x.handlers[:], x.filters[:], x.level, x.propagate, x.disabled) for x in loggers]
    meta_path = sys.meta_path[:]
    try:
        yield
    finally:
        logging.captureWarnings(False)
        sys.meta_path[:] = meta_path
        for logger in manager.loggerDict.values():
            if isinstance(logger, logging.Logger) and logger not in loggers:
                logger.handlers, logger.level, logger.propagate = [], logging.NOTSET, True
        for logger, handlers, filters, level, propagate, disabled in saved:
            logger.handlers, logger.filters, logger.level = handlers, filters, level
            logger.propagate, logger.disabled = propagate, disabled


@pytest.fixture
def configure(restore_logging: None) -> Configure:
    """``configure_logging`` into a fresh stream (returned), with these settings."""

    def make(component: str = "worker", **settings: Any) -> io.StringIO:
        stream = io.StringIO()
        values = {"log_format": "json", "log_level": "INFO", **settings}
        configure_logging(Settings(**values), component, stream=stream)
        return stream

    return make


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    """Each line of ``stream`` as JSON (it must be one object per line)."""
    lines = stream.getvalue().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(record, dict) for record in parsed), lines
    return parsed


# --- the JSON lines ------------------------------------------------------------------------------


def test_json_lines_carry_time_level_logger_message_and_component(configure: Configure) -> None:
    stream = configure("runner")
    before = datetime.now(UTC)
    logging.getLogger("vividflow.test").info("hello %s", "world")
    logging.getLogger("vividflow.test").warning("line one\nline two")
    after = datetime.now(UTC)

    first, second = records(stream)
    assert list(first)[:5] == ["time", "level", "logger", "message", "component"]
    assert first == {**first, "level": "INFO", "logger": "vividflow.test", "message": "hello world"}
    assert first["component"] == "runner" and "job_id" not in first and "videojob" not in first
    assert first["time"].endswith("Z")
    logged = datetime.fromisoformat(first["time"])
    assert logged.utcoffset() == timedelta(0)
    assert before - timedelta(milliseconds=1) <= logged <= after
    assert (second["level"], second["message"]) == ("WARNING", "line one\nline two")


def test_job_fields_inside_log_context_only(configure: Configure) -> None:
    stream = configure()
    log = logging.getLogger("vividflow.test")
    log.info("before")
    with log_context(job_id="job-1", videojob="ns/vj-1"):
        log.info("inside")
        with log_context(videojob=None, attempt="2"):
            log.info("nested")
        log.info("explicit", extra={"job_id": "other"})
    log.info("after")

    before, inside, nested, explicit, after = records(stream)
    assert "job_id" not in before and "job_id" not in after and "videojob" not in after
    assert (inside["job_id"], inside["videojob"]) == ("job-1", "ns/vj-1")
    assert (nested["job_id"], nested["videojob"], nested["attempt"]) == ("job-1", "ns/vj-1", "2")
    assert explicit["job_id"] == "other"  # extra= wins over the context
    assert current_log_context() == {}


def test_log_context_refuses_names_of_record_attributes() -> None:
    for name in ("message", "name", "levelname", "time", "component"):
        with pytest.raises(ValueError, match=name), log_context(**{name: "x"}):
            pass


def test_exceptions_are_one_line_with_their_traceback(configure: Configure) -> None:
    stream = configure()
    try:
        raise ValueError("boom")
    except ValueError:
        with log_context(job_id="job-2"):
            logging.getLogger("vividflow.test").exception("it failed")

    (record,) = records(stream)
    assert (record["message"], record["level"], record["job_id"]) == ("it failed", "ERROR", "job-2")
    assert record["exc_info"].startswith("Traceback (most recent call last):")
    assert record["exc_info"].rstrip().endswith("ValueError: boom")


def test_python_warnings_and_extra_fields_are_json_too(configure: Configure) -> None:
    stream = configure()
    warnings.warn("old thing", DeprecationWarning, stacklevel=1)
    logging.getLogger("vividflow.test").info("fetched", extra={"bytes": 12, "host": "example.com"})

    warned, fetched = records(stream)
    assert warned["logger"] == "py.warnings" and "DeprecationWarning: old thing" in warned["message"]
    assert (fetched["bytes"], fetched["host"]) == (12, "example.com")


def test_levels_and_quiet_http_loggers(configure: Configure) -> None:
    stream = configure(log_level="WARNING")
    logging.getLogger("vividflow.test").info("hidden")
    logging.getLogger("vividflow.test").warning("shown")
    assert [record["message"] for record in records(stream)] == ["shown"]

    stream = configure()
    logging.getLogger("httpx").info("HTTP Request: GET https://example.com/")
    logging.getLogger("httpx").warning("a retry")
    assert [record["message"] for record in records(stream)] == ["a retry"]

    stream = configure(log_level="DEBUG")
    logging.getLogger("httpx").info("HTTP Request: GET https://example.com/")
    assert [record["message"] for record in records(stream)] == ["HTTP Request: GET https://example.com/"]


# --- the text lines ------------------------------------------------------------------------------


def test_text_lines_keep_their_shape_with_the_job_at_the_end(configure: Configure) -> None:
    stream = configure("operator", log_format="text")
    log = logging.getLogger("vividflow.operator.test")
    log.info("plain")
    with log_context(job_id="job-3", videojob="ns/vj-3"):
        log.warning("about a job")
        try:
            raise RuntimeError("bad")
        except RuntimeError:
            log.exception("failed")

    lines = stream.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(rf"{stamp} operator INFO vividflow\.operator\.test: plain", lines[0]), lines[0]
    assert re.fullmatch(
        rf"{stamp} operator WARNING vividflow\.operator\.test: about a job \[job_id=job-3 videojob=ns/vj-3\]",
        lines[1],
    ), lines[1]
    assert lines[2].endswith("ERROR vividflow.operator.test: failed [job_id=job-3 videojob=ns/vj-3]")
    assert lines[3] == "Traceback (most recent call last):" and lines[-1] == "RuntimeError: bad"


# --- the context in threads and tasks ---------------------------------------------------------------


def test_each_thread_has_its_own_context(configure: Configure) -> None:
    stream = configure()
    log = logging.getLogger("vividflow.test")
    both_inside = threading.Barrier(2, timeout=30)
    both_logged = threading.Barrier(2, timeout=30)

    def run_job(job_id: str) -> None:
        with log_context(job_id=job_id):
            both_inside.wait()  # the two contexts are open at once
            log.info("working on %s", job_id)
            both_logged.wait()

            def child() -> None:
                log.info("child of %s, bare", job_id)
                with log_context(**fields):
                    log.info("child of %s, carried", job_id)

            fields = current_log_context()
            thread = threading.Thread(target=child)
            thread.start()
            thread.join(timeout=30)

    threads = [threading.Thread(target=run_job, args=(job_id,)) for job_id in ("job-a", "job-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    log.info("main thread")

    found = {record["message"]: record.get("job_id") for record in records(stream)}
    assert found == {
        "working on job-a": "job-a",
        "working on job-b": "job-b",
        "child of job-a, bare": None,  # a new thread starts without the context
        "child of job-b, bare": None,
        "child of job-a, carried": "job-a",
        "child of job-b, carried": "job-b",
        "main thread": None,
    }


def test_each_asyncio_task_has_its_own_context(configure: Configure) -> None:
    stream = configure("operator")
    log = logging.getLogger("vividflow.test")

    async def handle(job_id: str, mine: asyncio.Event, theirs: asyncio.Event) -> None:
        with log_context(job_id=job_id):
            log.info("start %s", job_id)
            mine.set()
            await theirs.wait()  # the other task runs (and logs) inside its own context meanwhile
            log.info("end %s", job_id)

    async def main() -> None:
        a, b = asyncio.Event(), asyncio.Event()
        await asyncio.wait_for(asyncio.gather(handle("job-a", a, b), handle("job-b", b, a)), timeout=30)

    asyncio.run(main())
    found = [(record["message"], record["job_id"]) for record in records(stream)]
    assert sorted(found) == [
        ("end job-a", "job-a"),
        ("end job-b", "job-b"),
        ("start job-a", "job-a"),
        ("start job-b", "job-b"),
    ]


# --- secrets ---------------------------------------------------------------------------------------


def test_mask_secrets_hides_our_credentials_and_keeps_the_rest() -> None:
    key, secret = generate_key(), new_secret()
    signature = Webhook(secret).sign("msg_1", datetime.now(UTC), '{"status":"completed"}')
    assert signature.startswith("v1,")
    cases = {
        f"key {key} accepted": f"key {display_prefix(key)}...REDACTED accepted",
        f"secret is {secret}.": "secret is whsec_REDACTED.",
        f"webhook-signature: {signature} v1,{signature[3:]}": "webhook-signature: v1,REDACTED v1,REDACTED",
        "Authorization: Bearer ya29.a0Af-token_x/y=": "Authorization: Bearer REDACTED",
        "Cookie: vividflow_session=tok.sig; theme=dark": "Cookie: vividflow_session=REDACTED; theme=dark",
        "GET https://h/x?X-Goog-Signature=ab12&page=2&access_token=q": (
            "GET https://h/x?X-Goog-Signature=REDACTED&page=2&access_token=REDACTED"
        ),
        f"GET /x?next={key}": f"GET /x?next={display_prefix(key)}...REDACTED",
    }
    for text, masked in cases.items():
        assert mask_secrets(text) == masked
        assert mask_secrets(masked) == masked
    for harmless in (
        f"key {display_prefix(key)} revoked",
        "job 8c0e7c3e-1b6f-4a55-9a8e-2b8f0c6f0e11 finished: completed",
        "exit_code=3 status_code=200 design=flat",
        "GET /api/v1/history?limit=20&cursor=abc",
        "the bearer of bad news",
    ):
        assert mask_secrets(harmless) == harmless


def test_every_record_is_masked_whatever_carries_the_secret(configure: Configure) -> None:
    stream = configure()
    log = logging.getLogger("vividflow.test")
    key, secret = generate_key(), new_secret()
    log.info("checked %s for %s", key, "ann")
    log.info("headers %s", {"Authorization": f"Bearer {key}"})  # a non-text argument
    log.info("calling", extra={"url": f"https://hook.example/?token={secret}"})
    log.info('fetching "https://h/img.png?sig=abc"')
    log.info("%d things", "not a number")  # a broken record: logging reports it, nothing is raised
    try:
        raise PermissionError(f"refused {key}")
    except PermissionError:
        log.exception("with %s", secret)

    text = stream.getvalue()
    assert key not in text and secret not in text and "abc" not in text.replace("REDACTED", "")
    checked, headers, calling, fetching, failed = records(stream)
    assert checked["message"] == f"checked {display_prefix(key)}...REDACTED for ann"
    assert "Bearer REDACTED" in headers["message"]
    assert calling["url"] == "https://hook.example/?token=REDACTED"
    assert fetching["message"] == 'fetching "https://h/img.png?sig=REDACTED"'
    assert failed["message"] == "with whsec_REDACTED"
    assert f"PermissionError: refused {display_prefix(key)}...REDACTED" in failed["exc_info"]


def test_text_lines_are_masked_too(configure: Configure) -> None:
    stream = configure(log_format="text")
    key = generate_key()
    try:
        raise ValueError(f"Bearer {key}")
    except ValueError:
        logging.getLogger("vividflow.test").exception("key %s", key)
    assert key not in stream.getvalue() and "Bearer REDACTED" in stream.getvalue()


# --- the format choice -------------------------------------------------------------------------------


def test_auto_is_text_on_a_terminal_and_json_elsewhere(tmp_path: Path) -> None:
    leader, follower = os.openpty()
    with open(leader, "rb") as _, open(follower, "w") as terminal, (tmp_path / "log").open("w") as file:
        assert choose_format("auto", terminal) == "text"
        assert choose_format("auto", file) == "json"
        assert choose_format("json", terminal) == "json" and choose_format("text", file) == "text"
    read, write = os.pipe()
    with open(read) as _, open(write, "w") as pipe:
        assert choose_format("auto", pipe) == "json"
    assert choose_format("auto", io.StringIO()) == "json"
    closed = io.StringIO()
    closed.close()
    assert choose_format("auto", closed) == "json"


def test_auto_in_a_process_whose_stderr_is_a_file(tmp_path: Path) -> None:
    """What a container or ``>file 2>&1`` gives: JSON, without anything in the environment."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("VIVID_")}
    program = (
        "import logging; from vividflow.logs import configure_logging; from vividflow.settings import "
        "Settings; configure_logging(Settings(), 'runner'); logging.getLogger('vividflow.x').info('hi')"
    )
    with (tmp_path / "out").open("w") as out:
        subprocess.run(
            [sys.executable, "-c", program], stderr=out, env=env, cwd=REPO_ROOT, check=True, timeout=60
        )
    (record,) = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    assert (record["message"], record["component"]) == ("hi", "runner")


def test_transformers_logs_through_our_handler_once_adopted(tmp_path: Path) -> None:
    """transformers installs a plain stderr handler of its own when imported (late, with a model); once
    adopted (as the Wan loader does after its imports) ours is used, and its progress bars are off in
    JSON."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("VIVID_")}
    program = (
        "from vividflow.logs import configure_logging; from vividflow.settings import Settings\n"
        "configure_logging(Settings(log_format='json'), 'worker')\n"
        "from transformers.utils import logging as tl\n"
        "from vividflow.logs import adopt_library_loggers; adopt_library_loggers()\n"
        "tl.get_logger('transformers.models.x').warning('from %s', 'transformers')\n"
        "assert not tl.is_progress_bar_enabled()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert (record["logger"], record["message"]) == ("transformers.models.x", "from transformers")


# --- uvicorn -------------------------------------------------------------------------------------


def access_record(path: str, status: int = 200) -> None:
    """An access log record as uvicorn's HTTP protocols write it."""
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:50412", "GET", path, "1.1", status
    )


def test_uvicorn_config_writes_json_access_lines_without_secrets(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = uvicorn_log_config(Settings(log_format="json", log_level="INFO"))
    assert json.loads(json.dumps(config)) == config  # plain data: uvicorn may hand it to its workers
    logging.config.dictConfig(config)
    key = generate_key()

    access_record(f"/api/v1/status/j-1?api_key={key}&page=2")
    with log_context(job_id="j-1"):
        logging.getLogger("vividflow.apiserver.test").info("job %s started", "j-1")
    logging.getLogger("uvicorn.error").info("Application startup complete.")

    captured = capsys.readouterr()
    assert key not in captured.out + captured.err
    (access,) = [json.loads(line) for line in captured.out.splitlines()]  # uvicorn's access log: stdout
    assert access == {
        "time": access["time"],
        "level": "INFO",
        "logger": "uvicorn.access",
        "message": '127.0.0.1:50412 - "GET /api/v1/status/j-1?api_key=REDACTED&page=2 HTTP/1.1" 200',
        "component": "api",
        "client": "127.0.0.1:50412",
        "method": "GET",
        "path": "/api/v1/status/j-1?api_key=REDACTED&page=2",
        "http_version": "1.1",
        "status": 200,
    }
    ours, uvicorn = [json.loads(line) for line in captured.err.splitlines()]
    assert (ours["logger"], ours["job_id"], ours["component"]) == ("vividflow.apiserver.test", "j-1", "api")
    assert (uvicorn["logger"], uvicorn["message"]) == ("uvicorn.error", "Application startup complete.")


def test_access_lines_written_directly_are_the_librarys_lines(restore_logging: None) -> None:
    """Plain access records skip python-json-logger's attribute walk; the line must not change."""
    formatter = JsonLogFormatter("api")
    handler = logging.handlers.BufferingHandler(capacity=100)
    handler.addFilter(ContextFilter())
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    key = generate_key()
    try:
        access_record("/api/v1/status/j-1")
        access_record(f"/files/caf\u00e9?api_key={key}", 404)
        with log_context(job_id="j-1"):  # a field added: the library writes it
            access_record("/healthz")
    finally:
        access.removeHandler(handler)
    plain, unusual, with_context = handler.buffer
    for record in handler.buffer:
        assert formatter.format(record) == mask_secrets(JsonFormatter.format(formatter, record))
    assert formatter._plain_access_line(plain) is not None
    assert formatter._plain_access_line(unusual) is not None
    assert key not in formatter.format(unusual)
    assert formatter._plain_access_line(with_context) is None
    assert json.loads(formatter.format(with_context))["job_id"] == "j-1"


def test_uvicorn_config_in_text(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(uvicorn_log_config(Settings(log_format="text", log_level="INFO")))
    access_record("/healthz?token=t0ps3cret")
    line = capsys.readouterr().out.strip()
    assert line.endswith(
        ' api INFO uvicorn.access: 127.0.0.1:50412 - "GET /healthz?token=REDACTED HTTP/1.1" 200'
    )
    assert "t0ps3cret" not in line


def test_a_runner_pod_names_its_videojob() -> None:
    assert videojob_of(Settings(videojob_name="vj-1", videojob_namespace="media")) == "media/vj-1"
    assert videojob_of(Settings(videojob_name="vj-1", kube_namespace="jobs")) == "jobs/vj-1"
    assert videojob_of(Settings(videojob_name=None)) is None
