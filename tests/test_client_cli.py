"""The client commands (`vividflow generate/status/cancel/history`) as real subprocesses against a real
`vividflow serve`: uploads and URLs, readable errors and exit codes, --json, and (veo3.1 jobs run for
real against the fake Vertex AI) --wait/--out, failures, cancel --running and --follow; the status
stream resumed after a dropped connection, polling on a server without one, and bounded retries."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from fastapi import Request, Response
from fastapi.responses import JSONResponse

from tests import serve
from tests.api.conftest import image_bytes
from tests.fixtures.fake_vertex import FakeVertex, Scenario
from tests.fixtures.https_server import HttpsServer
from tests.ports import free_port
from tests.serve import create_key, running_server, settings_env
from tests.served_app import served_app
from tests.tcp_proxy import TcpProxy
from vividflow.apiserver.app import create_app
from vividflow.client.api import ApiClient, ApiError, api_base
from vividflow.client.commands import image_source, parse_params
from vividflow.client.stream import Retry, follow
from vividflow.runner.video import probe_mp4
from vividflow.settings import Settings

TIMEOUT = 120.0


# --- a server, a user, the CLI --------------------------------------------------------------------


@dataclass
class Served:
    url: str
    key: str
    """An API key of the server's user cli@example.com."""
    database_url: str
    port: int

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


@contextmanager
def vivid_server(tmp_path: Path, env: dict[str, str] | None = None, **settings: Any) -> Iterator[Served]:
    """`vividflow serve` on SQLite whose result URLs point at itself, with one user's key."""
    database_url = f"sqlite:///{tmp_path / 'vividflow.db'}"
    port = free_port()
    values = {
        "database_url": database_url,
        "data_dir": tmp_path / "data",
        "public_url": f"http://127.0.0.1:{port}",
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serve, "free_port", lambda: port)  # so that public_url names the server's port
        with running_server({**settings_env(**values, **settings), **(env or {})}, tmp_path) as process:
            yield Served(process.url, create_key(database_url, "cli@example.com"), database_url, process.port)


def cli_env(url: str | None, key: str | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("VIVID_")}
    env.update({"VIVID_API_URL": url} if url else {})
    env.update({"VIVID_API_KEY": key} if key else {})
    return env


def vividflow(
    served: Served | None, *args: str, url: str | None = None, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `vividflow ARGS` to its end, configured by VIVID_API_URL/VIVID_API_KEY."""
    env = cli_env(url or (served.url if served else None), key or (served.key if served else None))
    return subprocess.run(
        [sys.executable, "-m", "vividflow.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


class Lines:
    """The lines of a pipe as they come, read on a thread."""

    def __init__(self, pipe: IO[str], other: Lines | None = None) -> None:
        self.seen: list[str] = []
        self.other = other
        """The process's other pipe, shown when this one closes too soon."""
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = TIMEOUT) -> str:
        """The next line for which ``predicate`` holds (waiting for it to arrive)."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout} s; lines: {self.seen}") from None
            if line is None:
                other = self.other.rest() if self.other else []
                raise AssertionError(f"the pipe closed first; lines: {self.seen}; other pipe: {other}")
            self.seen.append(line)
            if predicate(line):
                return line

    def rest(self) -> list[str]:
        """The remaining lines, once the pipe has closed."""
        while (line := self._queue.get(timeout=TIMEOUT)) is not None:
            self.seen.append(line)
        return self.seen


@dataclass
class Running:
    process: subprocess.Popen[str]
    stdout: Lines
    stderr: Lines

    def wait(self) -> int:
        return self.process.wait(timeout=TIMEOUT)


@contextmanager
def vividflow_running(served: Served, *args: str, url: str | None = None) -> Iterator[Running]:
    """`vividflow ARGS` in the background, its output readable line by line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vividflow.cli", *args],
        env=cli_env(url or served.url, served.key),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        stderr = Lines(process.stderr)
        yield Running(process, Lines(process.stdout, stderr), stderr)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def submit(served: Served, **fields: str) -> str:
    data = {"prompt": "a lighthouse in a storm", **fields}
    files = {"image": ("in.png", image_bytes(), "image/png")}
    response = httpx.post(f"{served.url}/api/v1/generate", headers=served.headers, data=data, files=files)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def server_json(served: Served, path: str) -> Any:
    response = httpx.get(f"{served.url}/api/v1/{path}", headers=served.headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "beach.png"
    path.write_bytes(image_bytes())
    return path


# --- arguments, without a server ------------------------------------------------------------------


def test_arguments_are_read_as_documented(png_file: Path) -> None:
    assert image_source(str(png_file)) == (png_file, None)
    for url in ("https://example.com/a.png", "gs://bucket/a.png"):
        assert image_source(url) == (None, url)
    assert parse_params(["duration_seconds=6", "camera_motion=Pan (right)", "x="]) == {
        "duration_seconds": "6",
        "camera_motion": "Pan (right)",
        "x": "",
    }
    assert api_base("http://h:8000") == api_base("http://h:8000/api/v1/") == "http://h:8000/api/v1"

    for args, message in (
        (["--param", "width"], "not NAME=VALUE"),
        (["--param", "model=veo3.1"], "give model as --model"),
        (["--param", "seed=1", "--param", "seed=2"], "given twice"),
    ):
        result = vividflow(
            None, "generate", str(png_file), "--prompt", "p", *args, url="http://127.0.0.1:9", key="k"
        )
        assert result.returncode == 2 and message in result.stderr, result.stderr
    missing = vividflow(None, "generate", "no-such.png", "--prompt", "p", url="http://127.0.0.1:9", key="k")
    assert missing.returncode == 2 and "no such file: no-such.png" in missing.stderr


# --- against a server that only queues ------------------------------------------------------------


def test_generate_status_history_and_cancel_of_a_queued_job(tmp_path: Path, png_file: Path) -> None:
    with vivid_server(tmp_path, workers=0) as served:
        result = vividflow(
            served,
            "generate",
            str(png_file),
            "--prompt",
            "Waves at sunset",
            "--model",
            "veo3.1",
            "--param",
            "duration_seconds=6",
        )
        assert result.returncode == 0, result.stderr
        job_id = result.stdout.strip()
        assert (
            "Job accepted (queued" in result.stderr and f"vividflow status {job_id} --follow" in result.stderr
        )
        # The file itself was uploaded.
        assert (tmp_path / "data" / "inputs" / f"{job_id}.png").read_bytes() == png_file.read_bytes()

        shown = vividflow(served, "status", job_id)
        assert shown.returncode == 0
        assert f"job_id          {job_id}" in shown.stdout and "status          queued" in shown.stdout
        as_json = vividflow(served, "status", job_id, "--json")
        assert json.loads(as_json.stdout) == server_json(served, f"status/{job_id}")

        listed = vividflow(served, "history", "--limit", "5")
        assert listed.returncode == 0
        (line,) = listed.stdout.splitlines()
        assert line.split()[:3] == [job_id, "queued", "veo3.1"] and line.endswith("Waves at sunset")
        assert json.loads(vividflow(served, "history", "--json").stdout) == server_json(served, "history")

        cancelled = vividflow(served, "cancel", job_id)
        assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"Cancelled job {job_id}."
        assert server_json(served, f"status/{job_id}")["status"] == "cancelled"
        after = vividflow(served, "status", job_id)
        assert after.returncode == 3 and "status          cancelled" in after.stdout
        again = vividflow(served, "cancel", job_id, "--json")
        assert again.returncode == 2
        assert json.loads(again.stdout) == {
            "error": "Job cannot be cancelled",
            "details": ["The job is cancelled; only queued jobs can be cancelled."],
        }


def test_urls_are_sent_as_image_url(tmp_path: Path, https_server: HttpsServer) -> None:
    url = https_server.add("client-cli/beach.png", image_bytes(), "image/png")
    with vivid_server(tmp_path, https_server.env(), workers=0) as served:
        result = vividflow(served, "generate", url, "--prompt", "p", "--json")
        assert result.returncode == 0, result.stderr
        (accepted,) = json_lines(result.stdout)
        assert accepted["message"] == "Generation job accepted" and accepted["status"] == "queued"
        assert https_server.hits("client-cli/beach.png") == 1  # the server fetched it
        assert server_json(served, f"status/{accepted['job_id']}")["status"] == "queued"


def test_invalid_parameters_are_shown_readably(tmp_path: Path, png_file: Path) -> None:
    with vivid_server(tmp_path, workers=0) as served:
        args = [
            "generate",
            str(png_file),
            "--prompt",
            "p",
            "--model",
            "veo3.1",
            "--param",
            "duration_seconds=5",
            "--param",
            "width=32",
        ]
        result = vividflow(served, *args)
        assert result.returncode == 2 and result.stdout == ""
        lines = result.stderr.splitlines()
        assert lines[0] == "Error (HTTP 400): Invalid parameters"
        assert len(lines) == 3 and all(line.startswith("  - ") for line in lines[1:])
        assert any("duration_seconds" in line for line in lines) and any("width" in line for line in lines)

        as_json = vividflow(served, *args, "--json")
        assert as_json.returncode == 2
        body = json.loads(as_json.stdout)
        assert body["error"] == "Invalid parameters" and [f"  - {d}" for d in body["details"]] == lines[1:]
        assert server_json(served, "history")["count"] == 0


def test_keys_and_access_errors_are_usage_errors(tmp_path: Path, png_file: Path) -> None:
    with vivid_server(tmp_path, workers=0) as served:
        job_id = submit(served)
        no_key = vividflow(None, "status", job_id, url=served.url)
        assert no_key.returncode == 2 and "No API key: set VIVID_API_KEY" in no_key.stderr

        wrong = "vf_" + "x" * 43
        refused = vividflow(None, "history", url=served.url, key=wrong)
        assert refused.returncode == 2 and "Error (HTTP 401): Invalid or missing API key" in refused.stderr
        assert wrong not in refused.stdout + refused.stderr

        other = create_key(served.database_url, "other@example.com")
        forbidden = vividflow(None, "status", job_id, url=served.url, key=other)
        assert forbidden.returncode == 2 and "Error (HTTP 403): Access denied" in forbidden.stderr
        missing = vividflow(served, "status", "no-such-job")
        assert missing.returncode == 2 and "Error (HTTP 404)" in missing.stderr
        assert "no-such-job" in missing.stderr

        # The options instead of the variables, and the API root as the URL.
        env_free = subprocess.run(
            [
                sys.executable,
                "-m",
                "vividflow.cli",
                "status",
                job_id,
                "--json",
                "--api-url",
                f"{served.url}/api/v1",
                "--api-key",
                served.key,
            ],
            env=cli_env(None, None),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert env_free.returncode == 0 and json.loads(env_free.stdout)["job_id"] == job_id

    gone = vividflow(None, "history", url=f"http://127.0.0.1:{free_port()}", key="vf_k")
    assert gone.returncode == 1 and "No answer from http://127.0.0.1:" in gone.stderr


# --- the status stream: resumed after a drop, polled on an old server, bounded retries -------------


def test_follow_resumes_with_last_event_id_after_a_dropped_connection(tmp_path: Path) -> None:
    with vivid_server(tmp_path, workers=0) as served, TcpProxy(served.port) as proxy:
        job_id = submit(served)
        with vividflow_running(served, "status", job_id, "--follow", "--json", url=proxy.url) as cli:
            first = json.loads(cli.stdout.wait_for(bool))
            assert first["status"] == "queued"
            proxy.sever()
            proxy.wait_for(lambda requests: len(requests) >= 2 and b"\r\n\r\n" in requests[1])
            httpx.post(f"{served.url}/api/v1/cancel/{job_id}", headers=served.headers).raise_for_status()
            assert cli.wait() == 3
            statuses = [body["status"] for body in map(json.loads, cli.stdout.rest())]
        assert statuses == ["queued", "cancelled"]  # resumed: nothing lost, nothing repeated
        opening, resumed = (request.lower() for request in proxy.requests[:2])
        assert f"/api/v1/status/{job_id}/events".encode() in opening and b"last-event-id" not in opening
        assert b"accept: text/event-stream" in opening
        assert b"\r\nlast-event-id: 1\r\n" in resumed


def test_follow_polls_a_server_without_the_stream(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'old.db'}"
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path / "data", workers=0))

    @app.middleware("http")
    async def no_streams(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """As a server from before status streams: nothing at the stream's path."""
        if request.url.path.endswith("/events"):
            details = [f"There is nothing at {request.url.path}."]
            return JSONResponse({"error": "Not found", "details": details}, status_code=404)
        return await call_next(request)

    with served_app(app) as url:
        served = Served(
            url, create_key(database_url, "old@example.com"), database_url, int(url.rsplit(":", 1)[1])
        )
        job_id = submit(served)
        assert httpx.get(f"{url}/api/v1/status/{job_id}/events", headers=served.headers).status_code == 404

        with vividflow_running(served, "status", job_id, "--follow", "--json") as cli:
            assert json.loads(cli.stdout.wait_for(bool))["status"] == "queued"
            httpx.post(f"{url}/api/v1/cancel/{job_id}", headers=served.headers).raise_for_status()
            assert cli.wait() == 3
            assert [body["status"] for body in map(json.loads, cli.stdout.rest())] == ["queued", "cancelled"]

        missing = vividflow(served, "status", "no-such-job", "--follow")
        assert missing.returncode == 2 and "Error (HTTP 404): Not found" in missing.stderr


def test_follow_gives_up_after_bounded_retries(tmp_path: Path) -> None:
    with vivid_server(tmp_path, workers=0) as served, TcpProxy(served.port) as proxy:
        job_id = submit(served)
        with ApiClient(proxy.url, served.key) as client:
            statuses = follow(client, job_id, retry=Retry(attempts=2, first_delay=0.01, max_delay=0.02))
            assert next(statuses)["status"] == "queued"
            proxy.close()  # the connection drops and no new one gets through
            with pytest.raises(ApiError) as caught:
                next(statuses)
        assert caught.value.status_code is None
        assert caught.value.error == f"Lost the status stream of job {job_id}"
        assert caught.value.details[-1] == "gave up after 2 retries"


# --- jobs that run: veo3.1 against the fake Vertex AI ---------------------------------------------


@pytest.fixture
def veo_env(fake_vertex: FakeVertex) -> dict[str, str]:
    return fake_vertex.settings_env()


def test_generate_wait_out_downloads_the_video(
    tmp_path: Path, png_file: Path, fake_vertex: FakeVertex, veo_env: dict[str, str]
) -> None:
    fake_vertex.set_scenario(polls=3)
    out = tmp_path / "videos" / "beach.mp4"
    out.parent.mkdir()
    with vivid_server(tmp_path, veo_env, workers=1) as served:
        result = vividflow(
            served, "generate", str(png_file), "--prompt", "p", "--model", "veo3.1", "--out", str(out)
        )
        assert result.returncode == 0, result.stderr
        job_id, result_url = result.stdout.splitlines()
        final = server_json(served, f"status/{job_id}")
        assert final["status"] == "completed" and final["result_url"] == result_url
        assert out.read_bytes() == httpx.get(result_url).content and probe_mp4(out).frames > 0
        assert [path.name for path in out.parent.iterdir()] == ["beach.mp4"]  # no temporary file left
        progress = [line for line in result.stderr.splitlines() if line.startswith("[")]
        assert progress[-1].endswith(f"{job_id[:8]} completed 100%"), result.stderr
        assert f"Saved {out} (" in result.stderr

        # A finished job: status --out downloads it at once; plain cancel is refused (409).
        again = tmp_path / "again.mp4"
        assert vividflow(served, "status", job_id, "--out", str(again), "--json").returncode == 0
        assert again.read_bytes() == out.read_bytes()
        refused = vividflow(served, "cancel", job_id)
        assert refused.returncode == 2 and "Error (HTTP 409): Job cannot be cancelled" in refused.stderr

        # A download that fails leaves nothing behind.
        (tmp_path / "data" / "results" / f"{job_id}.mp4").unlink()
        lost = vividflow(served, "status", job_id, "--out", str(out.parent / "lost.mp4"))
        assert lost.returncode == 2 and "Error (HTTP 404): Not found" in lost.stderr, lost.stderr
        assert [path.name for path in out.parent.iterdir()] == ["beach.mp4"]


def test_a_failed_job_exits_1(
    tmp_path: Path, png_file: Path, fake_vertex: FakeVertex, veo_env: dict[str, str]
) -> None:
    fake_vertex.set_scenario(outcome="rai")
    with vivid_server(tmp_path, veo_env, workers=1) as served:
        result = vividflow(served, "generate", str(png_file), "--prompt", "p", "--model", "veo3.1", "--wait")
        assert result.returncode == 1, result.stderr
        job_id = result.stdout.strip()
        final = server_json(served, f"status/{job_id}")
        assert final["status"] == "failed"
        assert f"Job failed: {final['error_message']}" in result.stderr
        shown = vividflow(served, "status", job_id)
        assert shown.returncode == 1 and f"failure_reason  {final['failure_reason']}" in shown.stdout


def test_cancel_running_ends_a_processing_job_and_its_followers_exit_3(
    tmp_path: Path, png_file: Path, fake_vertex: FakeVertex, veo_env: dict[str, str]
) -> None:
    fake_vertex.set_scenario(Scenario(until=threading.Event()))  # processing until cancelled
    with vivid_server(tmp_path, veo_env, workers=1) as served:
        args = ["generate", str(png_file), "--prompt", "p", "--model", "veo3.1", "--wait"]
        with vividflow_running(served, *args) as waiting:
            job_id = waiting.stdout.wait_for(bool)
            waiting.stderr.wait_for(lambda line: f"{job_id[:8]} processing" in line)
            with vividflow_running(served, "status", job_id, "--follow", "--json") as following:
                assert json.loads(following.stdout.wait_for(bool))["status"] == "processing"
                refused = vividflow(served, "cancel", job_id)
                assert refused.returncode == 2 and "only queued jobs can be cancelled" in refused.stderr

                cancelled = vividflow(served, "cancel", job_id, "--running")
                assert cancelled.returncode == 0, cancelled.stderr
                assert following.wait() == 3 and waiting.wait() == 3
                followed = json_lines("\n".join(following.stdout.rest()))
            assert "Job was cancelled." in waiting.stderr.rest()
        assert [body["status"] for body in followed][-1] == "cancelled"
        assert {body["status"] for body in followed[:-1]} == {"processing"}
        assert all(isinstance(body["progress"], int) for body in followed[:-1])
        assert followed[-1] == server_json(served, f"status/{job_id}")
        assert vividflow(served, "status", job_id, "--follow").returncode == 3
