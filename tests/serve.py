"""`vividflow serve` as a real process (uvicorn, its protocol, its access log, its worker processes), for
tests that need more than the in-process TestClient: raw sockets, slow clients, `kill -9`.

    with running_server(settings_env(database_url=url, workers=0), tmp_path) as server:
        httpx.get(f"{server.url}/healthz")
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.ports import free_port
from tests.processes import stop, wait_until_answers
from vividflow.apiserver.db.session import make_engine, make_session_factory
from vividflow.apiserver.services import keys


def settings_env(**values: Any) -> dict[str, str]:
    """``VIVID_*`` variables for ``Settings`` keyword arguments (lists comma-joined)."""
    env: dict[str, str] = {}
    for name, value in values.items():
        if isinstance(value, list | tuple):
            text = ",".join(str(item) for item in value)
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        env[f"VIVID_{name.upper()}"] = text
    return env


def create_key(database_url: str, email: str, name: str = "test") -> str:
    """A new API key of ``email`` (created if new), written straight into the database."""
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine).begin() as session:
            return keys.create_key(session, keys.get_or_create_user(session, email), name).secret
    finally:
        engine.dispose()


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    tmp_dir: Path
    """The server's TMPDIR (spooled uploads would land here)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def open_files(self) -> list[str]:
        """What the server's file descriptors point at."""
        targets = []
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                targets.append(os.readlink(fd))
            except OSError:
                continue  # closed meanwhile
        return targets

    def children(self) -> list[int]:
        """Process ids of the server's child processes."""
        found: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                found += [int(pid) for pid in (task / "children").read_text().split()]
            except OSError:
                continue
        return found

    def connect(self, timeout: float = 30.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def kill(self) -> None:
        """``kill -9``, as an OOM killer or a node failure would."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        stop(self.process)


def server_environment(env: Mapping[str, str], tmp_dir: Path) -> dict[str, str]:
    """This test process's environment without its ``VIVID_*`` settings, plus ``env``."""
    base = {name: value for name, value in os.environ.items() if not name.startswith("VIVID_")}
    return {**base, "TMPDIR": str(tmp_dir), "PYTHONUNBUFFERED": "1", **env}


@contextmanager
def running_server(
    env: Mapping[str, str], work_dir: Path, *, name: str = "server", timeout: float = 120.0
) -> Iterator[ServerProcess]:
    """Start ``vividflow serve`` with ``env`` (``VIVID_*``), wait until ``/readyz`` answers 200, and stop
    it afterwards."""
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = work_dir / f"{name}-tmp"
    tmp_dir.mkdir(exist_ok=True)
    log_path = work_dir / f"{name}.log"
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "vividflow.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=server_environment(env, tmp_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = ServerProcess(process, port, log_path, tmp_dir)
    try:
        wait_until_answers(process, f"{server.url}/readyz", log_path, name=name, timeout=timeout)
        yield server
    finally:
        server.stop()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response until the server closes the connection: (status, headers, body)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/1.1 "):
        raise AssertionError(f"no HTTP response: {data[:200]!r}")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body
