"""Bounds on requests, against the real `vividflow serve` over raw sockets: bodies are cut off while they
are read (chunked or not, any content type), slow or huge requests are refused and their connections
closed, connections are limited, and the access log shows no secret."""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.kube import wait_for
from tests.serve import ServerProcess, create_key, read_response, running_server, settings_env
from vividflow.apiserver.body_limits import UPLOAD_SLACK_BYTES

MIB = 1024 * 1024
UPLOAD_LIMIT = MIB
HEADER_TIMEOUT, BODY_IDLE_TIMEOUT, BODY_TIMEOUT = 2, 2, 6
MAX_HEADER_BYTES = 8192


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> str:
    path = tmp_path_factory.mktemp("http-limits") / "vividflow.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("http-limits-server")
    env = settings_env(
        database_url=database,
        data_dir=work / "data",
        workers=0,
        migrate_on_start=False,
        max_upload_bytes=UPLOAD_LIMIT,
        header_timeout_seconds=HEADER_TIMEOUT,
        body_idle_timeout_seconds=BODY_IDLE_TIMEOUT,
        body_timeout_seconds=BODY_TIMEOUT,
        max_header_bytes=MAX_HEADER_BYTES,
    )
    with running_server(env, work) as running:
        yield running


@pytest.fixture(scope="module")
def key(database: str, server: ServerProcess) -> str:
    secret = create_key(database, "limits@example.com")
    assert httpx.get(f"{server.url}/api/v1/usage", headers={"X-API-Key": secret}).status_code == 200
    return secret


def _request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _send_chunked(sock: socket.socket, first: bytes, total: int) -> int:
    """Send ``first`` then zeros as chunks until ``total`` bytes or the server answers or hangs up;
    the body bytes sent."""
    sent = 0
    filler = b"\0" * (64 * 1024)
    try:
        piece = first
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
            piece = filler
        sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def _spooled_files(server: ServerProcess) -> list[str]:
    return [target for target in server.open_files() if target.startswith(str(server.tmp_dir))]


@pytest.mark.parametrize(
    ("content_type", "first", "limit"),
    [
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n'
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n",
            UPLOAD_LIMIT,
        ),
        ("application/json", b'{"prompt": "', 64 * 1024),
        ("application/x-www-form-urlencoded", b"prompt=", 64 * 1024),
    ],
)
def test_a_chunked_body_is_cut_off_at_its_limit(
    server: ServerProcess, key: str, content_type: str, first: bytes, limit: int
) -> None:
    """60 MB sent without Content-Length: the server stops reading just past the limit, answers 413
    in the error shape, closes the connection, and keeps no spooled file or descriptor."""
    total = 60 * MIB
    descriptors = len(server.open_files())
    with server.connect() as sock:
        head = {"X-API-Key": key, "Content-Type": content_type, "Transfer-Encoding": "chunked"}
        sock.sendall(_request_head("POST", "/api/v1/generate", head))
        sent = _send_chunked(sock, first, total)
        status, headers, body = read_response(sock)
    assert status == 413, body
    assert headers["connection"] == "close"
    allowed = limit + UPLOAD_SLACK_BYTES if "multipart" in content_type else limit
    assert json.loads(body) == {
        "error": "Request too large",
        "details": [f"The request body is larger than the limit of {allowed} bytes."],
    }
    assert sent < total / 2, f"the server read {sent} bytes before refusing"
    assert wait_for("no spooled upload left open", lambda: not _spooled_files(server) or None, timeout=10)
    assert not any(server.tmp_dir.iterdir())
    wait_for("the descriptors to be released", lambda: len(server.open_files()) <= descriptors, timeout=10)


def test_an_announced_oversized_body_is_refused_before_it_is_sent(server: ServerProcess, key: str) -> None:
    with server.connect() as sock:
        head = {"X-API-Key": key, "Content-Type": "application/json", "Content-Length": str(157 * MIB)}
        sock.sendall(_request_head("POST", "/api/v1/generate", head))
        status, _, body = read_response(sock)  # nothing of the body was sent
    assert status == 413 and json.loads(body)["error"] == "Request too large"


def test_slow_headers_get_408_and_the_connection_closes(server: ServerProcess) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")  # and never the blank line
        status, headers, body = read_response(sock)
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body) == {
        "error": "Request timeout",
        "details": [f"The request headers did not arrive within {HEADER_TIMEOUT} seconds."],
    }


def test_a_connection_that_sends_nothing_is_closed(server: ServerProcess) -> None:
    with server.connect() as sock:
        status, _, _ = read_response(sock)
    assert status == 408


def test_a_stalled_body_gets_408(server: ServerProcess, key: str) -> None:
    with server.connect() as sock:
        head = {"X-API-Key": key, "Content-Type": "application/json", "Content-Length": "100"}
        sock.sendall(_request_head("POST", "/api/v1/generate", head) + b'{"prompt": ')
        status, headers, body = read_response(sock)
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body)["error"] == "Request timeout"


def test_a_trickling_body_hits_the_total_time_limit(server: ServerProcess, key: str) -> None:
    """One byte at a time, each well within the idle limit: the whole body still has a deadline."""
    started = time.monotonic()
    with server.connect() as sock:
        head = {"X-API-Key": key, "Content-Type": "application/json", "Content-Length": "10000"}
        sock.sendall(_request_head("POST", "/api/v1/generate", head))
        for _ in range(200):
            readable, _, _ = select.select([sock], [], [], BODY_IDLE_TIMEOUT / 4)
            if readable:
                break
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
        status, _, body = read_response(sock)
    assert status == 408, body
    assert time.monotonic() - started >= BODY_TIMEOUT


def test_a_client_that_hangs_up_mid_body_is_no_server_error(server: ServerProcess, key: str) -> None:
    with server.connect() as sock:
        head = {
            "X-API-Key": key,
            "Content-Type": "multipart/form-data; boundary=xyz",
            "Content-Length": "5000",
        }
        sock.sendall(_request_head("POST", "/api/v1/generate", head) + b"--xyz\r\nContent-Disposition: form")
    wait_for(
        "the server to notice",
        lambda: "disconnected before sending its whole body" in server.log(),
        timeout=30,
    )
    assert "Traceback" not in server.log() and "unhandled error" not in server.log()


def test_huge_headers_get_431(server: ServerProcess) -> None:
    with server.connect() as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(_request_head("GET", "/healthz", {"X-Padding": "a" * (50 * MIB // 1024)}))
        status, headers, body = read_response(sock)
    assert status == 431 and headers["connection"] == "close"
    assert json.loads(body)["details"] == [
        f"The request line and headers are larger than {MAX_HEADER_BYTES} bytes."
    ]
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # and the server is fine


def test_deeply_nested_json_is_a_400(server: ServerProcess, key: str) -> None:
    for path in ("/api/v1/generate", "/api/v1/keys"):
        response = httpx.post(
            f"{server.url}{path}",
            headers={"X-API-Key": key, "Content-Type": "application/json"},
            content=b"[" * 20_000 + b"]" * 20_000,  # within the size limit, far past any parser's depth
        )
        assert response.status_code == 400, (path, response.text)
        body = response.json()
        assert set(body) == {"error", "details"} and body["details"], body


def test_secrets_in_query_strings_never_reach_the_access_log(server: ServerProcess) -> None:
    secret = "vf_supersecret123"
    response = httpx.get(f"{server.url}/healthz?api_key={secret}&x-goog-signature=abc123&page=2")
    assert response.status_code == 200
    line = wait_for(
        "the access log line",
        lambda: next((row for row in server.log().splitlines() if "/healthz?" in row), None),
    )
    assert secret not in server.log() and "abc123" not in server.log()
    assert "api_key=REDACTED" in line and "x-goog-signature=REDACTED" in line and "page=2" in line


def test_connections_beyond_the_limit_get_503(tmp_path: Path, database: str) -> None:
    env = settings_env(
        database_url=database,
        data_dir=tmp_path / "data",
        workers=0,
        migrate_on_start=False,
        max_connections=3,
        header_timeout_seconds=120,
    )
    with running_server(env, tmp_path) as server:
        idle = [server.connect() for _ in range(3)]
        try:

            def refused() -> bool:
                with server.connect() as sock:
                    sock.sendall(_request_head("GET", "/healthz", {"Connection": "close"}))
                    return read_response(sock)[0] == 503

            wait_for("a connection past the limit to be refused", refused, timeout=30)
        finally:
            for sock in idle:
                sock.close()
        wait_for(
            "the server to serve again",
            lambda: httpx.get(f"{server.url}/healthz").status_code == 200,
            timeout=30,
        )
