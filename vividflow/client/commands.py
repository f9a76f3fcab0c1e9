"""The client commands: ``generate``, ``status``, ``cancel`` and ``history``, on any server's public API.

Exit codes: 0 completed (or accepted, without waiting), 1 failed (or the server could not be reached
or answered 5xx), 2 usage error (bad arguments, no key, a 4xx answer), 3 cancelled.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:  # imported where used: `vividflow serve` and friends never load the client
    from vividflow.client.api import ApiClient, ApiError, Body

EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_INTERRUPTED = 1, 2, 3, 130
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_RESERVED_FIELDS = {
    "prompt": "--prompt",
    "model": "--model",
    "image": "IMAGE_OR_URL",
    "image_url": "IMAGE_OR_URL",
}

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        help="The server (default: VIVID_API_URL, else http://127.0.0.1:8000).",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="Your API key (default: VIVID_API_KEY; prefer it, options show in ps).",
        show_default=False,
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the server's JSON (one object a line).")]
OutFile = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", dir_okay=False, help="Download the video here once completed (implies waiting)."
    ),
]


def register(app: typer.Typer) -> None:
    """Add the client commands to the ``vividflow`` command."""
    app.command()(generate)
    app.command()(status)
    app.command()(cancel)
    app.command()(history)


def generate(
    image_or_url: Annotated[
        str,
        typer.Argument(metavar="IMAGE_OR_URL", help="A local image (uploaded), or an https:// or gs:// URL."),
    ],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What should happen in the video.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="wan2.1 (the server's default) or veo3.1.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            metavar="NAME=VALUE",
            help="A model parameter, NAME=VALUE (repeatable), e.g. duration_seconds=6.",
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow the job until it ends.")] = False,
    out: OutFile = None,
    json_output: JsonOut = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Submit an image and a prompt; prints the job id (with --wait, follows the job to its end)."""
    fields = parse_params(param or [])
    if model is not None:
        fields["model"] = model
    image, image_url = image_source(image_or_url)
    _check_out(out)
    with _session(api_url, api_key, json_output) as client:
        accepted = client.generate(prompt, fields, image=image, image_url=image_url)
        job_id = str(accepted.get("job_id"))
        if json_output:
            _emit(accepted)
        else:
            wait_time = accepted.get("estimated_wait_time")
            estimate = f"; estimated wait {wait_time}" if wait_time else ""
            typer.echo(f"Job accepted ({accepted.get('status')}{estimate}).", err=True)
            typer.echo(job_id)
        if wait or out is not None:
            _finish(client, _watch(client, job_id, json_output), out, json_output)
        elif not json_output:
            typer.echo(f"Follow it with: vividflow status {job_id} --follow", err=True)


def status(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job's id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Follow the job live until it ends.")
    ] = False,
    out: OutFile = None,
    json_output: JsonOut = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Show a job's status (with --follow, live until it ends); the exit code tells a finished job's end."""
    _check_out(out)
    with _session(api_url, api_key, json_output) as client:
        if follow or out is not None:
            _finish(client, _watch(client, job_id, json_output), out, json_output)
        body = client.status(job_id)
        if json_output:
            _emit(body)
        else:
            for name, value in body.items():
                typer.echo(f"{name:<16}{_show(name, value)}")
        raise typer.Exit(_exit_code(body))  # a finished job's code; 0 while it runs


def cancel(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job's id.")],
    running: Annotated[
        bool, typer.Option("--running", help="Also stop the job if it is already processing.")
    ] = False,
    json_output: JsonOut = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Cancel a queued job (with --running, a processing one too); its credit is refunded."""
    with _session(api_url, api_key, json_output) as client:
        body = client.cancel(job_id, running=running)
        if json_output:
            _emit(body)
        else:
            typer.echo(f"Cancelled job {body.get('job_id', job_id)}.")


def history(
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", help="How many jobs (1-100; server default 20).")
    ] = None,
    json_output: JsonOut = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """List your recent jobs, newest first."""
    with _session(api_url, api_key, json_output) as client:
        body = client.history(limit)
        if json_output:
            _emit(body)
            return
        jobs = body.get("jobs") or []
        if not jobs:
            typer.echo("No jobs yet.", err=True)
        for job in jobs:
            prompt = " ".join(str(job.get("prompt", "")).split())
            prompt = prompt if len(prompt) <= 50 else prompt[:49] + "…"
            created = job.get("created_at", "")
            state, model = job.get("status", ""), job.get("model", "")
            typer.echo(f"{job.get('job_id')}  {state:<10} {model:<7} {created}  {prompt}")


# --- arguments ------------------------------------------------------------------------------------


def parse_params(params: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` options as form fields (the server validates names and values)."""
    fields: dict[str, str] = {}
    for item in params:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        if name in _RESERVED_FIELDS:
            raise typer.BadParameter(f"give {name} as {_RESERVED_FIELDS[name]}", param_hint="--param")
        if name in fields:
            raise typer.BadParameter(f"{name} is given twice", param_hint="--param")
        fields[name] = value
    return fields


def image_source(value: str) -> tuple[Path | None, str | None]:
    """(a local file to upload, or a URL for the server to fetch) for IMAGE_OR_URL."""
    if _URL.match(value):
        return None, value
    path = Path(value).expanduser()
    if not path.is_file():
        raise typer.BadParameter(
            f"no such file: {value} (or give an https:// or gs:// URL)", param_hint="IMAGE_OR_URL"
        )
    if not os.access(path, os.R_OK):
        raise typer.BadParameter(f"cannot read {value}", param_hint="IMAGE_OR_URL")
    return path, None


def _check_out(out: Path | None) -> None:
    if out is not None and not out.parent.is_dir():
        raise typer.BadParameter(f"the folder {out.parent} does not exist", param_hint="--out")


# --- talking to the server ------------------------------------------------------------------------


@contextmanager
def _session(api_url: str | None, api_key: str | None, json_output: bool) -> Iterator[ApiClient]:
    """A client of the configured server; an ApiError ends the command with its exit code."""
    from pydantic import ValidationError

    from vividflow.client.api import ApiClient, ApiError
    from vividflow.settings import Settings

    if api_url is None or api_key is None:
        try:
            settings = Settings()
        except ValidationError as error:  # named, not shown: a value may be a secret
            names = sorted({f"VIVID_{str(problem['loc'][0]).upper()}" for problem in error.errors()})
            _fail(f"Invalid settings: {', '.join(names)}", EXIT_USAGE)
        api_url = api_url or settings.api_url
        api_key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    if not api_key:
        _fail("No API key: set VIVID_API_KEY (or pass --api-key).", EXIT_USAGE)
    try:
        with ApiClient(api_url, api_key) as client:
            yield client
    except ApiError as error:
        _show_error(error, json_output)
        raise typer.Exit(EXIT_USAGE if error.is_client_error else EXIT_FAILED) from None


def _watch(client: ApiClient, job_id: str, json_output: bool) -> Body:
    """Follow the job to its end (progress on stderr, or each status as JSON); the final status."""
    from rich.console import Console

    from vividflow.client.progress import JobProgress
    from vividflow.client.stream import follow

    final: Body = {}
    try:
        if json_output:
            for final in follow(client, job_id):
                _emit(final)
        else:
            with JobProgress(Console(stderr=True), job_id) as display:
                for final in follow(client, job_id):
                    display.update(final)
    except KeyboardInterrupt:
        _fail(
            f"Stopped following; the job goes on. Follow it again: vividflow status {job_id} --follow",
            EXIT_INTERRUPTED,
        )
    return final


def _finish(client: ApiClient, final: Body, out: Path | None, json_output: bool) -> NoReturn:
    """Download a completed job's video if asked, say how the job ended, and exit with its code."""
    state = final.get("status")
    if state == "completed":
        result_url = str(final.get("result_url") or "")
        if out is not None:
            size = client.download(result_url, out)
            typer.echo(f"Saved {out} ({size} bytes).", err=True)
        if not json_output:
            typer.echo(result_url)
    elif not json_output:
        if state == "failed":
            typer.echo(f"Job failed: {final.get('error_message') or 'no reason given'}", err=True)
        elif state == "cancelled":
            typer.echo("Job was cancelled.", err=True)
    raise typer.Exit(_exit_code(final))


def _exit_code(body: Body) -> int:
    """The exit code of the job's state: 1 failed, 3 cancelled, else 0."""
    return {"failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}.get(str(body.get("status")), 0)


# --- output ---------------------------------------------------------------------------------------


def _emit(body: Body) -> None:
    typer.echo(json.dumps(body, ensure_ascii=False, separators=(",", ":")))


def _show(name: str, value: Any) -> str:
    if name == "progress" and isinstance(value, int | float):
        return f"{value}%"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_show(key, item)}" for key, item in value.items() if item is not None)
    if isinstance(value, float) and name.endswith("_time"):
        return f"{value:.1f} s"
    return str(value)


def _show_error(error: ApiError, json_output: bool) -> None:
    if json_output and error.body is not None:
        _emit(error.body)
        return
    code = f" (HTTP {error.status_code})" if error.status_code is not None else ""
    lines = [f"Error{code}: {error.error}", *(f"  - {detail}" for detail in error.details)]
    if error.retry_after is not None and error.status_code == 429:
        lines.append(f"  Try again in {error.retry_after:g} s.")
    typer.echo("\n".join(lines), err=True)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)
