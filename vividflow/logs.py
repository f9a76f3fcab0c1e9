"""Logging for every process (API server, operator, runner, worker): one setup, two formats, no secrets.

Why one module: the same record must look the same wherever it comes from, carry the job it is about,
and never show a credential, whichever process writes it.

- Format: ``VIVID_LOG_FORMAT`` ``text`` (``<time> <component> <LEVEL> <logger>: <message>``, for people
  at a terminal), ``json`` (one object per line with ``time``, ``level``, ``logger``, ``message``,
  ``component``, for log pipelines; python-json-logger writes it), or ``auto``: text when stderr is a
  terminal, JSON otherwise (a container, a file, a pipe).
- Context: records logged inside ``with log_context(job_id=...)`` carry ``job_id`` (and ``videojob``,
  ...). The fields live in a :class:`contextvars.ContextVar`, so each thread and each asyncio task
  has its own; a new thread starts without any (pass them on with :func:`current_log_context`).
- Secrets: every handler masks, in the final message and traceback, whatever looks like one of our
  API keys, a webhook secret or signature, a Bearer token, a session cookie or a credential-like
  query parameter; the formatters mask their output once more. uvicorn's access log also has the
  query values of credential-like parameters replaced before formatting (both live in
  :mod:`vividflow.log_secrets`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import logging.config
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from vividflow.log_secrets import mask_secrets
from vividflow.settings import Settings

LogFormat = Literal["text", "json"]

# No format here shows a record's thread or process, and looking them up for every record (the
# thread's name, the multiprocessing process's name, the pid) cost about a tenth of an access line.
logging.logThreads = False
logging.logProcesses = False
logging.logMultiprocessing = False

QUIET_LOGGERS = ("httpx", "httpx2", "httpcore")
"""A line per HTTP request (webhooks, image fetches, GCS, Vertex polls): shown only at DEBUG."""

# --- context fields ---------------------------------------------------------------------------------

_NO_FIELDS: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("vividflow_log_context", default=_NO_FIELDS)
_RESERVED_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "component",
    "time",
    "level",
    "logger",
}
_CONTEXT_NAMES = "_vividflow_context"
"""Record attribute naming the fields :class:`ContextFilter` added (a private name: not logged)."""


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add ``fields`` (``job_id=``, ``videojob=``, ...) to every record logged inside the block, by this
    thread or asyncio task; nested blocks add to (and may override) the outer ones; a ``None`` value
    leaves a field out."""
    clashing = sorted(set(fields) & _RESERVED_FIELDS)
    if clashing:
        raise ValueError(f"log_context fields clash with log record attributes: {', '.join(clashing)}")
    merged = {**_context.get(), **{name: str(value) for name, value in fields.items() if value is not None}}
    token = _context.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, str]:
    """The fields in effect here: ``with log_context(**fields)`` in a new thread carries them on."""
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Adds the :func:`log_context` fields to each record (a field given with ``extra=`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        added = []
        for name, value in _context.get().items():
            if name not in record.__dict__:
                setattr(record, name, value)
                added.append(name)
        if added:
            setattr(record, _CONTEXT_NAMES, (*getattr(record, _CONTEXT_NAMES, ()), *added))
        return True


# --- formatters ------------------------------------------------------------------------------------


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The parts of a uvicorn access record: ``client, method, path, http_version, status``."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, http_version, status = args
    return {"client": client, "method": method, "path": path, "http_version": http_version, "status": status}


_PLAIN_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "color_message",
    "taskName",
}
"""What a record holds when nothing (``extra=``, :func:`log_context`) added fields to it."""


def _iso_time(record: logging.LogRecord) -> str:
    return (
        datetime.fromtimestamp(record.created, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class JsonLogFormatter(JsonFormatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, component, then the
    context fields, the access log's fields, ``extra=`` fields and ``exc_info`` (the traceback text)."""

    def __init__(self, component: str) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"component": component},
            reserved_attrs=[*RESERVED_ATTRS, "taskName", "color_message"],
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = _iso_time(record)
        super().add_fields(log_data, record, message_dict)
        log_data.update(_access_fields(record))

    def format(self, record: logging.LogRecord) -> str:
        line = self._plain_access_line(record)
        return mask_secrets(super().format(record) if line is None else line)

    def _plain_access_line(self, record: logging.LogRecord) -> str | None:
        """An access record with nothing added to it, written directly: the same line as the
        library's, which looks at every attribute of every record (a third of an access line's cost,
        one line per request). None for any other record."""
        if record.exc_info or record.stack_info or not record.__dict__.keys() <= _PLAIN_RECORD_ATTRIBUTES:
            return None
        fields = _access_fields(record)
        if not fields:
            return None
        data = {
            "time": _iso_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self.static_fields,
            **fields,
        }
        return json.dumps(data, ensure_ascii=self.json_ensure_ascii)


class TextLogFormatter(logging.Formatter):
    """``<time> <component> <LEVEL> <logger>: <message> [job_id=... videojob=...]``."""

    def __init__(self, component: str) -> None:
        super().__init__(f"%(asctime)s {component.replace('%', '%%')} %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        names = getattr(record, _CONTEXT_NAMES, ())
        if names:
            line += " [" + " ".join(f"{name}={getattr(record, name)}" for name in names) + "]"
        return line

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def make_formatter(component: str, log_format: LogFormat) -> logging.Formatter:
    """The formatter of ``log_format`` (a dictConfig ``()`` factory)."""
    return JsonLogFormatter(component) if log_format == "json" else TextLogFormatter(component)


def choose_format(setting: Literal["auto", "text", "json"], stream: TextIO | None = None) -> LogFormat:
    """``setting``, with ``auto`` resolved: text when ``stream`` (default stderr) is a terminal."""
    if setting != "auto":
        return setting
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream is not None and stream.isatty() else "json"
    except (AttributeError, ValueError):  # no isatty, or closed
        return "json"


# --- libraries with their own handler -------------------------------------------------------------

LIBRARY_LOGGING_MODULES = ("transformers.utils.logging", "diffusers.utils.logging")
"""On import, these give their library's logger a plain stderr handler of their own and stop it
propagating, so its lines would be neither in our format nor masked; and their progress bars (model
loading) write to stderr too. Each module's public ``disable_default_handler()``,
``enable_propagation()`` and ``disable_progress_bar()`` undo that."""


_library_progress_bars = True
"""Whether the libraries may draw progress bars: only in text logs (set by :func:`configure_logging`)."""


def adopt_library_loggers(*, load: bool = False) -> None:
    """Make transformers and diffusers, as far as they are imported (with ``load``: importing their
    logging modules now), log through the root logger's handlers, and draw progress bars only in
    text logs. They are imported late, when a model loads: the Wan loader calls this with ``load``
    before importing the pipeline, so that even warnings given at import time are ours."""
    for name in LIBRARY_LOGGING_MODULES:
        if load and name not in sys.modules:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        module = sys.modules.get(name)
        if module is not None:
            module.disable_default_handler()
            module.enable_propagation()
            if not _library_progress_bars:
                module.disable_progress_bar()


# --- configuration ---------------------------------------------------------------------------------


def logging_config(
    settings: Settings, component: str, *, level: str | None = None, stream: str | TextIO = "ext://sys.stderr"
) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` of one handler on the root logger (``stream``, default
    stderr, which ``auto`` looks at) with the context and masking filters. Plain data
    (JSON-serialisable) unless ``stream`` is a stream: it may be handed to other processes, as uvicorn
    does to its workers."""
    level = level or settings.log_level
    quiet = level if level == "DEBUG" else max(level, "WARNING", key=logging.getLevelName)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "log-context": {"()": "vividflow.logs.ContextFilter"},
            "mask-secrets": {"()": "vividflow.log_secrets.MaskSecrets"},
        },
        "formatters": {
            "vividflow": {
                "()": "vividflow.logs.make_formatter",
                "component": component,
                "log_format": choose_format(settings.log_format, None if isinstance(stream, str) else stream),
            }
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": stream,
                "formatter": "vividflow",
                "filters": ["log-context", "mask-secrets"],
            }
        },
        "loggers": {name: {"level": quiet} for name in QUIET_LOGGERS},
        "root": {"handlers": ["default"], "level": level},
    }


def configure_logging(
    settings: Settings, component: str, *, level: str | None = None, stream: str | TextIO = "ext://sys.stderr"
) -> None:
    """Log this process's records (Python warnings, transformers' and diffusers' included) to stderr in
    ``settings.log_format`` at ``level`` (default ``settings.log_level``); in JSON, without the
    libraries' progress bars. ``component`` ("api", "operator", "runner", "worker") names the process
    in each line."""
    config = logging_config(settings, component, level=level, stream=stream)
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
    global _library_progress_bars
    _library_progress_bars = config["formatters"]["vividflow"]["log_format"] == "text"
    adopt_library_loggers()


def uvicorn_log_config(settings: Settings, component: str = "api") -> dict[str, Any]:
    """uvicorn's ``log_config``: :func:`logging_config`, with uvicorn's loggers on its handler and the
    access log (``uvicorn.access``, on stdout as uvicorn has it) redacting query secrets first."""
    config = logging_config(settings, component)
    config["filters"]["redact-query-secrets"] = {"()": "vividflow.log_secrets.RedactQuerySecrets"}
    config["handlers"]["access"] = {
        **config["handlers"]["default"],
        "stream": "ext://sys.stdout",
        "filters": ["redact-query-secrets", "log-context", "mask-secrets"],
    }
    level = settings.log_level
    config["loggers"].update(
        {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
        }
    )
    return config
