"""The live status stream against polling: N clients following N jobs on one server, each through
``GET /api/v1/status/{id}/events`` (SSE) or by polling ``GET /api/v1/status/{id}`` once a second.

    python bench/events.py [--database-url URL] [--redis-url URL] [--clients 1000] [--seconds 20]
                           [--progress-steps 4] [--from-queued] [--driver-threads N] [--log-dir DIR]

Without ``--database-url`` it uses a temporary SQLite file, where the server learns of changes made by
another process by polling ``jobs.event_seq`` every ``VIVID_EVENT_POLL_SECONDS`` (1 s). With a
PostgreSQL URL (``postgresql+psycopg://…``; migrated here; best a database of its own, e.g.
``createdb vividflow_bench``) it hears them through LISTEN/NOTIFY; with ``--redis-url`` on SQLite,
through Redis pub/sub (the URL then also holds the rate limits, as in a deployment). The bench only
touches the jobs it inserted itself, so the rest of a database is left alone.

Two runs, streams then polling, each on a fresh ``vividflow serve`` process (``VIVID_WORKERS=0``:
nothing runs jobs inside it; per-user limits raised to fit N clients; other ``VIVID_*`` variables of
the environment pass through, e.g. ``VIVID_DB_THREADS``):

- N jobs (veo3.1, a small PNG) are inserted into the database as ``POST /generate`` records them and
  started (the UPDATE of ``leases.claim_next_queued``, under the driver's lease owner) before the
  clients come; with ``--from-queued`` they stay queued and the start is the first timed change.
  One more job goes through ``POST /generate``, a stream, polls and a cancel to warm the server up
  before its idle RSS is read.
- N clients, asyncio tasks in this process with a connection each, open 100 at a time (the streams
  until their first event, the pollers with a first poll) and then follow one job each: an SSE stream
  (resumed with ``Last-Event-ID`` if it drops), or a poll every second, staggered over the first
  second, each 1 s after the previous one was sent (at once if that took longer). They use a minimal
  HTTP/1.1 client: httpx costs ~1.6 ms of CPU per request, more than the server at 1000 polls a second.
- A driver process stands for another server's executor on the same database: ``--progress-steps``
  progress values and then a completed result per job, each change in its own transaction (services
  jobs.record_progress / record_result) from a small thread pool, spread evenly over ``--seconds``
  (one job's changes ``seconds / changes`` apart, the jobs staggered across that interval). It runs at
  a higher priority (nice -5, where allowed) so that its changes come on time however busy the server
  is, notes ``time.monotonic()`` right after each commit (one clock for all processes on Linux) with
  the event's sequence number, and on SQLite with Redis publishes each event as a server's hub does.

Figures, per way of following:

- updates: the driver's changes the clients saw, of those made (a poll sees a change when a response
  shows its status and progress; a change can fall between two polls);
- /s: those updates per second over the active window (the first change to the last update seen),
  which the driver's rate bounds;
- delay p50/p99/max: from the commit to the client reading the event, or the first response that
  shows the change (for polling: the staleness a once-a-second client lives with);
- missing / dup / mismatched (streams; all should be 0): ids a stream skipped (between its first
  event and the job's last, the queue-position events the server records included), ids delivered
  twice, and events whose body is not the change made; reconnects and client errors;
- server RSS: VmRSS of the server process idle (after the warm-up), with the N clients connected
  (after ~2 s of polling for the pollers), its peak and after the clients left; per client =
  (connected - idle) / N;
- server CPU: utime + stime of the server process over the active window, and per update seen;
- req/s (polling): requests sent per second over the active window, and their response times.

The last lines give polling / stream for p99 delay and server CPU per update, the polling request
rate, and stream / polling for updates per second and RSS per client, then one JSON line. Server,
clients, driver and database share this machine's cores (the load average is printed), so the
absolute figures move with the machine and whatever else runs; a driver that still fell behind its
plan is reported. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import heapq
import io
import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from httpx_sse import connect_sse  # noqa: E402
from PIL import Image  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

PYTHON = sys.executable
EMAIL = "bench-events@example.com"
LEASE_SECONDS = 3600.0
"""The driver's lease on its jobs: longer than any run, so that no server recovers them meanwhile."""
TERMINAL = frozenset({"completed", "failed", "cancelled"})
CONNECT_AT_ONCE = 100
"""Clients opening their connection at the same time (1000 new connections within a second wait in
the server's listen queue, some for many seconds, while it serves the first ones)."""
SETTLE_SECONDS = 2.0
"""Time between the clients being in place and the driver's first change."""
DRAIN_SECONDS = 30.0
"""How long after the driver's last change the clients may take to see it."""
STREAM_READ_TIMEOUT = 60.0
"""A stream that sends nothing for this long (heartbeats come every 15 s) is reopened."""
POLL_TIMEOUT = 30.0
"""A poll that takes longer counts as an error."""

DRIVER_NICE = -5
"""The driver process's nice value (when allowed: root or CAP_SYS_NICE)."""
START, COMPLETE = -1, 100
"""The driver's actions other than a progress value."""
Commit = tuple[str, int, str, int | None, float]
"""(job id, event sequence number, status, progress, monotonic time right after the commit)."""


# ---------------------------------------------------------------------------------------------------
# Measuring the server process
# ---------------------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS for process {pid}")
    return int(match.group(1)) * 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (the server inherits it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


# ---------------------------------------------------------------------------------------------------
# The server, its database, its jobs
# ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> None:
        """Raise if the server exited (with the end of its log)."""
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the server exited with {self.process.returncode}; its log ends:\n{tail}")

    def rss(self) -> int:
        self.alive()
        return rss_bytes(self.pid)

    def cpu(self) -> float:
        self.alive()
        return cpu_seconds(self.pid)

    def problems(self) -> list[str]:
        """Lines of its log that are not INFO (warnings, errors, tracebacks)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if re.match(r"\s*(WARNING|ERROR|CRITICAL|Traceback)", line)]


@contextmanager
def serve(env: dict[str, str], log: Path) -> Iterator[Server]:
    port = free_port()
    command = [PYTHON, "-m", "vividflow.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the server exited with {process.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready within 120 s; see {log}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Batch:
    """A run's jobs and the lease owner the driver runs them as."""

    job_ids: list[str]
    owner: str


@dataclass(frozen=True)
class Database:
    url: str
    data_dir: Path

    def settings(self) -> Any:
        from vividflow.settings import Settings

        return Settings(database_url=self.url, data_dir=self.data_dir)

    @contextmanager
    def sessions(self) -> Iterator[Any]:
        from vividflow.apiserver.db.session import make_engine, make_session_factory

        engine = make_engine(self.url)
        try:
            yield make_session_factory(engine)
        finally:
            engine.dispose()

    def prepare(self) -> tuple[str, Any]:
        """Migrate; a new API key of the bench's user: (secret, principal)."""
        from vividflow.apiserver.db.migrate import upgrade
        from vividflow.apiserver.services import keys

        upgrade(self.url)
        with self.sessions() as factory, factory.begin() as session:
            user = keys.get_or_create_user(session, EMAIL)
            created = keys.create_key(session, user, f"bench-events-{os.getpid()}")
            principal = keys.Principal(user_id=user.id, key_id=created.key.id, email=EMAIL)
            return created.secret, principal

    def insert_jobs(self, principal: Any, count: int) -> list[str]:
        """``count`` queued veo3.1 jobs with a small PNG input, as ``POST /generate`` records them."""
        from vividflow.apiserver.clock import today
        from vividflow.apiserver.services import jobs
        from vividflow.jobspec import JobParameters, ModelName
        from vividflow.storage import locations

        settings = self.settings()
        image = png_bytes()
        parameters = JobParameters.for_model(ModelName.VEO31, {})
        job_ids = [str(uuid.uuid4()) for _ in range(count)]
        with self.sessions() as factory:
            for start in range(0, count, 200):
                with factory.begin() as session:
                    for job_id in job_ids[start : start + 200]:
                        jobs.insert_job(
                            session,
                            job_id=job_id,
                            principal=principal,
                            model=ModelName.VEO31,
                            prompt="a bench of the status stream",
                            parameters=parameters,
                            input_uri=locations.store_input(image, job_id, "image/png", settings),
                            output_uri=locations.output_uri_for(job_id, settings),
                            credit_day=today(),
                        )
        return job_ids

    def start_jobs(self, batch: Batch) -> None:
        """Start the jobs before the clients come (untimed): the run then measures progress and ends."""
        with self.sessions() as factory:
            for start in range(0, len(batch.job_ids), 200):
                with factory.begin() as session:
                    for job_id in batch.job_ids[start : start + 200]:
                        start_job(session, job_id, batch.owner)

    def event_seqs(self, job_ids: Sequence[str]) -> dict[str, int]:
        from vividflow.apiserver.services import events

        with self.sessions() as factory, factory() as session:
            return events.event_seqs(session, list(job_ids))

    def cancel_active(self, job_ids: Sequence[str]) -> int:
        """End what a run left active (an interrupted run must not leave jobs behind); how many."""
        from vividflow.apiserver.db.models import Job
        from vividflow.apiserver.services import jobs
        from vividflow.jobspec import JobStatus

        ended = 0
        with self.sessions() as factory, factory.begin() as session:
            for start in range(0, len(job_ids), 500):
                chunk = list(job_ids[start : start + 500])
                active = [JobStatus.QUEUED.value, JobStatus.PROCESSING.value]
                query = select(Job.id).where(Job.id.in_(chunk), Job.status.in_(active))
                for job_id in list(session.scalars(query)):
                    ended += jobs.finish(session, job_id, JobStatus.CANCELLED, message="bench interrupted")
        return ended


def warm_up(base: str, headers: dict[str, str]) -> None:
    """One job through POST /generate, a stream on it, a few polls and a cancel: the code paths of
    both runs, before the server's idle RSS is read."""
    files = {"image": ("a.png", png_bytes(), "image/png")}
    with httpx.Client(base_url=base, headers=headers, timeout=30, trust_env=False) as client:
        accepted = client.post("/api/v1/generate", data={"prompt": "warm up", "model": "veo3.1"}, files=files)
        accepted.raise_for_status()
        job_id = accepted.json()["job_id"]
        for _ in range(5):
            client.get(f"/api/v1/status/{job_id}").raise_for_status()
        with connect_sse(client, "GET", f"/api/v1/status/{job_id}/events") as source:
            source.response.raise_for_status()
            cancelled = False
            for event in source.iter_sse():
                if not event.data:
                    continue
                if json.loads(event.data).get("status") in TERMINAL:
                    break
                if not cancelled:
                    client.post(f"/api/v1/cancel/{job_id}").raise_for_status()
                    cancelled = True


# ---------------------------------------------------------------------------------------------------
# The driver: another server's executor, in a process of its own
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrivePlan:
    database_url: str
    redis_url: str | None
    """Publish each event there (SQLite with Redis: what a server's event hub does for its commits)."""
    job_ids: tuple[str, ...]
    actions: tuple[int, ...]
    """Each job's changes in order: START, a progress value (1-99) or COMPLETE."""
    seconds: float
    start_at: float
    threads: int
    owner: str

    @property
    def changes(self) -> int:
        return len(self.actions)

    @property
    def interval(self) -> float:
        return self.seconds / self.changes


@dataclass
class DriveResult:
    start_at: float
    commits: list[Commit]
    lateness: list[float]
    """How late each change started against its plan (s)."""
    durations: list[float]
    """How long each change took, to its commit (s)."""
    not_applied: int
    errors: list[str]


def driver_ready(database_url: str) -> bool:
    """Imports and a first connection, so that the timed run starts on time; and a higher scheduling
    priority where allowed (it stands for another machine: its changes should come on time however
    busy the server keeps the cores). Whether the priority was raised."""
    from sqlalchemy import text

    from vividflow.apiserver.db.session import make_engine
    from vividflow.apiserver.services import events, jobs  # noqa: F401

    engine = make_engine(database_url)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    engine.dispose()
    try:
        os.setpriority(os.PRIO_PROCESS, 0, DRIVER_NICE)
    except OSError:
        return False
    return True


def drive(plan: DrivePlan) -> DriveResult:
    """Start, progress and complete every job of the plan on schedule."""
    from vividflow.apiserver.db.session import make_engine, make_session_factory
    from vividflow.apiserver.services import events, jobs
    from vividflow.apiserver.services.events import Announced
    from vividflow.jobspec import RunResult

    engine = make_engine(plan.database_url)
    factory = make_session_factory(engine)
    commits: list[Commit] = []
    publisher: Any = None
    if plan.redis_url:
        import redis

        publisher = redis.Redis.from_url(plan.redis_url)

    def committed(announced: Announced) -> None:  # on the committing thread, right after COMMIT
        at = time.monotonic()
        body = announced.body or {}
        commits.append((announced.job_id, announced.seq, str(body.get("status")), body.get("progress"), at))
        if publisher is not None:
            publisher.publish(events.NOTIFY_CHANNEL, events.encode(announced))

    def change(job_id: str, action: int) -> bool:
        with factory.begin() as session:
            if action == START:
                return start_job(session, job_id, plan.owner)
            if action == COMPLETE:
                result = RunResult(ok=True, result_url=f"https://example.com/{job_id}.mp4")
                return jobs.record_result(session, job_id, result, plan.owner)
            return jobs.record_progress(session, job_id, action, plan.owner)

    with engine.connect():  # a warm pool
        pass
    start_at = max(plan.start_at, time.monotonic() + 0.05)
    count = len(plan.job_ids)
    queue = [(start_at + index / count * plan.interval, index, 0) for index in range(count)]
    heapq.heapify(queue)
    lateness: list[float] = []
    durations: list[float] = []
    errors: list[str] = []
    not_applied = 0
    left = count
    condition = threading.Condition()

    def work() -> None:
        nonlocal left, not_applied
        while True:
            with condition:
                while True:
                    if left == 0:
                        return
                    now = time.monotonic()
                    if queue and queue[0][0] <= now:
                        due, index, step = heapq.heappop(queue)
                        break
                    condition.wait(timeout=queue[0][0] - now if queue else None)
            began = time.monotonic()
            lateness.append(began - due)
            try:
                applied = change(plan.job_ids[index], plan.actions[step])
            except Exception as error:  # reported, and the job goes on
                applied = False
                errors.append(f"{type(error).__name__}: {error}"[:300])
            durations.append(time.monotonic() - began)
            with condition:
                not_applied += not applied
                if step + 1 < plan.changes:
                    heapq.heappush(
                        queue, (start_at + (index / count + step + 1) * plan.interval, index, step + 1)
                    )
                else:
                    left -= 1
                condition.notify_all()

    events.add_listener(committed)
    try:
        threads = [threading.Thread(target=work, name=f"driver-{n}") for n in range(plan.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        events.remove_listener(committed)
        engine.dispose()
        if publisher is not None:
            publisher.close()
    return DriveResult(start_at, commits, lateness, durations, not_applied, errors)


def start_job(session: Any, job_id: str, owner: str) -> bool:
    """Start one of the bench's own jobs as an executor would (other queued jobs of the database are
    never touched)."""
    from vividflow.apiserver.services import jobs

    return jobs.claim(session, job_id, owner, LEASE_SECONDS)


# ---------------------------------------------------------------------------------------------------
# The clients
# ---------------------------------------------------------------------------------------------------


class ResponseError(Exception):
    """A response the clients cannot use (status, framing)."""


class Http1:
    """A minimal HTTP/1.1 client on one kept-alive connection: plain GETs (Content-Length bodies) and
    one Server-Sent Events stream (chunked). httpx costs ~1.6 ms of CPU per request here, which at
    1000 polls a second would take more of the machine's two cores than the server; this costs a
    small fraction of that, so the cores go to the server."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self._head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _send(self, path: str, extra: dict[str, str]) -> asyncio.StreamReader:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        lines = "".join(f"{name}: {value}\r\n" for name, value in extra.items())
        self._writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self._head}{lines}\r\n".encode())
        return self._reader

    @staticmethod
    async def _response_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ResponseError(f"bad status line {head[0]!r}")
        fields: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name:
                fields[name.strip().lower()] = value.strip()
        return int(parts[1]), fields

    @staticmethod
    async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"x", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return
            chunk = await reader.readexactly(size)
            await reader.readexactly(2)
            yield chunk

    async def _body(self, reader: asyncio.StreamReader, fields: dict[str, str]) -> bytes:
        if "chunked" in fields.get("transfer-encoding", "").lower():
            return b"".join([chunk async for chunk in self._chunks(reader)])
        return await reader.readexactly(int(fields.get("content-length", "0")))

    async def get(self, path: str) -> tuple[int, bytes]:
        try:
            reader = await self._send(path, {})
            status, fields = await self._response_head(reader)
            body = await self._body(reader, fields)
        except BaseException:
            self.close()
            raise
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, body

    async def events(
        self, path: str, last_event_id: str | None
    ) -> AsyncGenerator[tuple[float, str, str], None]:
        """The stream's events as (monotonic arrival, id, data), comments and heartbeats left out;
        ResponseError for a status other than 200. The connection closes afterwards."""
        extra = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            extra["Last-Event-ID"] = last_event_id
        try:
            reader = await self._send(path, extra)
            status, fields = await self._response_head(reader)
            if status != 200:
                body = await self._body(reader, fields)
                raise ResponseError(f"HTTP {status}: {body[:200].decode(errors='replace')}")
            event_id, pending = "", b""
            data: list[str] = []
            async for chunk in self._chunks(reader):
                at = time.monotonic()
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    line = raw.rstrip(b"\r").decode()
                    if not line:
                        if data:
                            yield at, event_id, "\n".join(data)
                        data = []
                    elif line.startswith(":"):
                        continue
                    else:
                        name, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if name == "data":
                            data.append(value)
                        elif name == "id":
                            event_id = value
        finally:
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def make_clients(base: str, headers: dict[str, str], count: int) -> list[Http1]:
    """One client (one connection) per simulated user."""
    address = httpx.URL(base)
    return [Http1(address.host, address.port or 80, headers) for _ in range(count)]


@dataclass
class StreamLog:
    job_id: str
    arrivals: list[tuple[int, float, str | None, int | None]] = field(default_factory=list)
    """(event id, monotonic arrival, status, progress)."""
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    ended: bool = False


CLIENT_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ResponseError, ValueError)


async def follow(client: Http1, log: StreamLog, gate: asyncio.Semaphore, opened: Callable[[], None]) -> None:
    """Follow one job's stream to its end, resuming with Last-Event-ID after a drop."""
    last_id: str | None = None
    holding = False
    failures = 0
    while not log.ended and failures < 10:
        if last_id is None and not holding:
            await gate.acquire()  # a bounded number of streams opening at once
            holding = True
        try:
            stream = client.events(f"/api/v1/status/{log.job_id}/events", last_id)
            async with asyncio.timeout(STREAM_READ_TIMEOUT) as deadline, contextlib.aclosing(stream):
                async for at, event_id, data in stream:
                    deadline.reschedule(asyncio.get_running_loop().time() + STREAM_READ_TIMEOUT)
                    body = json.loads(data)
                    status, progress = body.get("status"), body.get("progress")
                    log.arrivals.append((int(event_id), at, status, progress))
                    last_id = event_id
                    if holding:
                        gate.release()
                        holding = False
                        opened()
                    if status in TERMINAL:
                        log.ended = True
                        break
        except (*CLIENT_ERRORS, TimeoutError) as error:
            log.errors.append(f"{type(error).__name__}: {error}"[:200])
        if not log.ended:
            log.reconnects += 1
            failures += 1
            await asyncio.sleep(min(0.5 * failures, 2.0))
    if holding:
        gate.release()
    client.close()


@dataclass
class PollLog:
    job_id: str
    observations: list[tuple[float, str | None, int | None]] = field(default_factory=list)
    """(monotonic arrival of the response, status, progress)."""
    sent: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def poll(client: Http1, log: PollLog, first_at: float) -> None:
    """GET /status once a second (1 s after the previous request was sent, at once if it took longer)
    until the job ends."""
    next_at = first_at
    path = f"/api/v1/status/{log.job_id}"
    try:
        while True:
            wait = next_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            sent = time.monotonic()
            next_at = sent + 1.0
            log.sent.append(sent)
            try:
                async with asyncio.timeout(POLL_TIMEOUT):
                    status, body = await client.get(path)
            except (*CLIENT_ERRORS, TimeoutError) as error:
                log.errors.append(f"{type(error).__name__}: {error}"[:200])
                continue
            at = time.monotonic()
            log.latencies.append(at - sent)
            if status != 200:
                log.errors.append(f"HTTP {status}: {body[:200].decode(errors='replace')}")
                continue
            data = json.loads(body)
            log.observations.append((at, data.get("status"), data.get("progress")))
            if data.get("status") in TERMINAL:
                return
    finally:
        client.close()


async def sample_rss(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError, RuntimeError):
            samples.append((time.monotonic(), rss_bytes(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.25)


# ---------------------------------------------------------------------------------------------------
# The two runs
# ---------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one way of following measured (times in seconds)."""

    name: str
    clients: int
    made: int
    seen: int
    delays: list[float]
    window: float
    rss_idle: int
    rss_with_clients: int
    rss_peak: int
    rss_after: int
    server_cpu: float
    client_cpu: float
    requests: int = 0
    request_latencies: list[float] = field(default_factory=list)
    errors: int = 0
    missing: int = 0
    duplicates: int = 0
    mismatched: int = 0
    reconnects: int = 0
    server_events: int = 0
    unfinished: int = 0
    driver_late_p99: float = math.nan
    """How late the driver's changes were against its plan (p99, s)."""
    notes: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.seen / self.window if self.window > 0 else math.nan

    @property
    def cpu_per_update(self) -> float:
        return self.server_cpu / self.seen if self.seen else math.nan

    @property
    def rss_per_client(self) -> float:
        return (self.rss_with_clients - self.rss_idle) / self.clients

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.window if self.window > 0 else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank; nan without values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Context:
    database: Database
    principal: Any
    headers: dict[str, str]
    env: dict[str, str]
    workdir: Path
    clients: int
    seconds: float
    actions: tuple[int, ...]
    from_queued: bool
    driver_threads: int
    publish_url: str | None
    pool: concurrent.futures.Executor


def plan_for(ctx: Context, batch: Batch, start_at: float) -> DrivePlan:
    return DrivePlan(
        database_url=ctx.database.url,
        redis_url=ctx.publish_url,
        job_ids=tuple(batch.job_ids),
        actions=ctx.actions,
        seconds=ctx.seconds,
        start_at=start_at,
        threads=ctx.driver_threads,
        owner=batch.owner,
    )


def driver_notes(result: DriveResult, plan: DrivePlan) -> list[str]:
    late = result.lateness
    notes = [
        f"driver: {len(result.commits)} commits, start lateness p50 {percentile(late, 50) * 1000:.0f} ms"
        f" p99 {percentile(late, 99) * 1000:.0f} ms max {max(late, default=0) * 1000:.0f} ms;"
        f" time to commit p50 {percentile(result.durations, 50) * 1000:.1f} ms"
        f" p99 {percentile(result.durations, 99) * 1000:.1f} ms max {max(result.durations, default=0):.2f} s"
    ]
    if percentile(late, 99) > 0.5:
        rate = len(plan.job_ids) * plan.changes / plan.seconds
        notes.append(
            f"driver: fell behind its {rate:.0f} changes/s (this machine could not commit them that fast"
            " beside the server and the clients): lower --progress-steps or raise --seconds"
        )
    if result.not_applied or result.errors:
        notes.append(f"driver: {result.not_applied} changes not applied; errors: {result.errors[:3]}")
    expected = len(plan.job_ids) * plan.changes
    if len(result.commits) != expected:
        notes.append(f"driver: {len(result.commits)} commits of {expected} planned")
    return notes


async def stream_run(ctx: Context, server: Server, batch: Batch) -> Run:
    job_ids = batch.job_ids
    loop = asyncio.get_running_loop()
    logs = [StreamLog(job_id) for job_id in job_ids]
    clients = make_clients(server.url, ctx.headers, len(job_ids))
    samples: list[tuple[float, int]] = []
    stop_sampling = asyncio.Event()
    rss_idle = server.rss()
    sampler = asyncio.create_task(sample_rss(server.pid, samples, stop_sampling))
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    connected = 0
    all_connected = asyncio.Event()

    def opened() -> None:
        nonlocal connected
        connected += 1
        if connected == len(logs):
            all_connected.set()

    began = time.monotonic()
    cpu_began = server.cpu()
    tasks = [asyncio.create_task(follow(c, log, gate, opened)) for c, log in zip(clients, logs, strict=True)]
    notes: list[str] = []
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_connected.wait(), timeout=120)
    connect_seconds = time.monotonic() - began
    notes.append(
        f"connect: {connected} streams open in {connect_seconds:.1f} s"
        f" (server CPU {server.cpu() - cpu_began:.1f} s)"
    )
    await asyncio.sleep(SETTLE_SECONDS)
    rss_with = server.rss()

    start_at = time.monotonic() + 0.5
    plan = plan_for(ctx, batch, start_at)
    cpu0, own0 = server.cpu(), own_cpu_seconds()
    driver = loop.run_in_executor(ctx.pool, drive, plan)
    result = await driver
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
    ended_at = time.monotonic()
    cpu1, own1 = server.cpu(), own_cpu_seconds()
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(1.0)
    rss_after = server.rss()
    stop_sampling.set()
    await sampler
    for client in clients:
        client.close()

    commits = {(job, seq): (status, progress, at) for job, seq, status, progress, at in result.commits}
    finals = ctx.database.event_seqs(job_ids)
    delays: list[float] = []
    missing = duplicates = mismatched = server_events = 0
    last_arrival = start_at
    for log in logs:
        seen: set[int] = set()
        for seq, at, status, progress in log.arrivals:
            if seq in seen:
                duplicates += 1
                continue
            seen.add(seq)
            made = commits.get((log.job_id, seq))
            if made is None:
                server_events += at > start_at  # the backlog event each stream starts with is not counted
                continue
            delays.append(at - made[2])
            last_arrival = max(last_arrival, at)
            mismatched += (status, progress) != (made[0], made[1])
        low = min(seen, default=1)
        missing += len(set(range(low, finals.get(log.job_id, 0) + 1)) - seen)
    notes += driver_notes(result, plan)
    errors = [error for log in logs for error in log.errors]
    if errors:
        notes.append(f"stream errors: {errors[:3]}")
    return Run(
        name="SSE stream",
        clients=len(job_ids),
        made=len(result.commits),
        seen=len(delays),
        delays=delays,
        window=last_arrival - result.start_at,
        rss_idle=rss_idle,
        rss_with_clients=rss_with,
        rss_peak=max((rss for _, rss in samples), default=rss_with),
        rss_after=rss_after,
        server_cpu=cpu1 - cpu0,
        client_cpu=own1 - own0,
        errors=len(errors),
        missing=missing,
        duplicates=duplicates,
        mismatched=mismatched,
        reconnects=sum(log.reconnects for log in logs),
        server_events=server_events,
        unfinished=len(pending),
        driver_late_p99=percentile(result.lateness, 99),
        notes=[
            *notes,
            f"window: {ended_at - result.start_at:.1f} s from the first change to the last client",
        ],
    )


async def poll_run(ctx: Context, server: Server, batch: Batch) -> Run:
    job_ids = batch.job_ids
    loop = asyncio.get_running_loop()
    logs = [PollLog(job_id) for job_id in job_ids]
    clients = make_clients(server.url, ctx.headers, len(job_ids))
    samples: list[tuple[float, int]] = []
    stop_sampling = asyncio.Event()
    rss_idle = server.rss()
    sampler = asyncio.create_task(sample_rss(server.pid, samples, stop_sampling))
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def connect(client: Http1, job_id: str) -> bool:
        """A first poll, a bounded number at once (as the streams open): 1000 new connections in
        one second would wait in the listen queue, some for many seconds."""
        async with gate:
            with contextlib.suppress(*CLIENT_ERRORS, TimeoutError):
                async with asyncio.timeout(POLL_TIMEOUT):
                    return (await client.get(f"/api/v1/status/{job_id}"))[0] == 200
        return False

    began, cpu_began = time.monotonic(), server.cpu()
    connected = sum(await asyncio.gather(*(connect(c, j) for c, j in zip(clients, job_ids, strict=True))))
    connect_note = (
        f"connect: {connected} clients connected (one poll each) in {time.monotonic() - began:.1f} s"
        f" (server CPU {server.cpu() - cpu_began:.1f} s)"
    )
    first_at = time.monotonic() + 0.2
    count = len(job_ids)
    tasks = [
        asyncio.create_task(poll(client, log, first_at + index / count))
        for index, (client, log) in enumerate(zip(clients, logs, strict=True))
    ]
    start_at = first_at + 1.0 + SETTLE_SECONDS
    plan = plan_for(ctx, batch, start_at)
    await asyncio.sleep(max(0.0, start_at - 0.05 - time.monotonic()))
    rss_with = server.rss()
    cpu0, own0 = server.cpu(), own_cpu_seconds()
    result = await loop.run_in_executor(ctx.pool, drive, plan)
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
    ended_at = time.monotonic()
    cpu1, own1 = server.cpu(), own_cpu_seconds()
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(1.0)
    rss_after = server.rss()
    stop_sampling.set()
    await sampler
    for client in clients:
        client.close()

    first_seen: dict[tuple[str, str | None, int | None], float] = {}
    last_seen = result.start_at
    for log in logs:
        for at, status, progress in log.observations:
            key = (log.job_id, status, progress if status == "processing" else None)
            if key not in first_seen:
                first_seen[key] = at
    delays: list[float] = []
    for job, _seq, status, progress, at in result.commits:
        observed = first_seen.get((job, status, progress if status == "processing" else None))
        if observed is not None:
            delays.append(observed - at)
            last_seen = max(last_seen, observed)
    window = last_seen - result.start_at
    in_window = [sent for log in logs for sent in log.sent if result.start_at <= sent <= last_seen]
    errors = [error for log in logs for error in log.errors]
    notes = [connect_note, *driver_notes(result, plan)]
    if errors:
        notes.append(f"poll errors: {errors[:3]}")
    latencies = [latency for log in logs for latency in log.latencies]
    notes.append(
        f"poll requests: {sum(len(log.sent) for log in logs)} in all, response time"
        f" p50 {percentile(latencies, 50) * 1000:.0f} ms p99 {percentile(latencies, 99) * 1000:.0f} ms"
    )
    notes.append(f"window: {ended_at - result.start_at:.1f} s from the first change to the last client")
    return Run(
        name="polling /status 1/s",
        clients=count,
        made=len(result.commits),
        seen=len(delays),
        delays=delays,
        window=window,
        rss_idle=rss_idle,
        rss_with_clients=rss_with,
        rss_peak=max((rss for _, rss in samples), default=rss_with),
        rss_after=rss_after,
        server_cpu=cpu1 - cpu0,
        client_cpu=own1 - own0,
        requests=len(in_window),
        request_latencies=latencies,
        errors=len(errors),
        unfinished=len(pending),
        driver_late_p99=percentile(result.lateness, 99),
        notes=notes,
    )


def phase(
    ctx: Context,
    runner: asyncio.Runner,
    name: str,
    measure: Callable[[Context, Server, Batch], Coroutine[Any, Any, Run]],
) -> tuple[Run, list[str]]:
    """One run on a fresh server: its jobs, the warm-up, the measurement; (run, server log problems)."""
    job_ids = ctx.database.insert_jobs(ctx.principal, ctx.clients)
    batch = Batch(job_ids, f"bench-events-{uuid.uuid4().hex[:8]}")
    try:
        if not ctx.from_queued:
            ctx.database.start_jobs(batch)
        with serve(ctx.env, ctx.workdir / f"{name}.log") as server:
            if children(server.pid):
                print(f"note: the {name} server has child processes {children(server.pid)} (not measured)")
            warm_up(server.url, ctx.headers)
            time.sleep(1.0)
            run = runner.run(measure(ctx, server, batch))
        return run, server.problems()
    finally:
        left = ctx.database.cancel_active(job_ids)
        if left:
            print(f"note: {left} jobs of the {name} run were still active; cancelled them")


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return "    n/a" if math.isnan(seconds) else f"{seconds * 1000:>7.0f}"


def mib(size: float) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def report(runs: list[Run]) -> None:
    for run in runs:
        line = (
            f"{run.name:<20} updates {run.seen:>6}/{run.made:<6} {run.per_second:>6.0f}/s"
            f"   delay p50 {ms(percentile(run.delays, 50))} ms  p99 {ms(percentile(run.delays, 99))} ms"
            f"  max {ms(max(run.delays, default=math.nan))} ms"
        )
        if run.name.startswith("SSE"):
            line += (
                f"   missing {run.missing}  dup {run.duplicates}  mismatched {run.mismatched}"
                f"  reconnects {run.reconnects}  errors {run.errors}"
            )
        else:
            line += f"   {run.requests_per_second:>5.0f} req/s  errors {run.errors}"
        print(line)
        print(
            f"{'':<20} server RSS {mib(run.rss_idle)} idle, {mib(run.rss_with_clients)} with {run.clients}"
            f" clients ({run.rss_per_client / 1024:.1f} KiB each), peak {mib(run.rss_peak)},"
            f" {mib(run.rss_after)} after; server CPU {run.server_cpu:.1f} s"
            f" ({run.cpu_per_update * 1000:.2f} ms/update); bench clients CPU {run.client_cpu:.1f} s"
        )
        extra = [f"{run.unfinished} clients unfinished"] if run.unfinished else []
        if run.server_events:
            extra.append(f"{run.server_events} queue-position events recorded by the server also delivered")
        for note in [*extra, *run.notes]:
            print(f"{'':<20} {note}")
    stream, polling = runs
    p99 = ratio(percentile(polling.delays, 99), percentile(stream.delays, 99))
    cpu = ratio(polling.cpu_per_update, stream.cpu_per_update)
    rate = ratio(stream.per_second, polling.per_second)
    rss = ratio(stream.rss_per_client, polling.rss_per_client)
    print(
        f"polling / stream: p99 delay {p99:.2f}x, server CPU per update {cpu:.2f}x,"
        f" {polling.requests_per_second:.0f} req/s against none;"
        f" stream / polling: updates/s {rate:.2f}x, server RSS per client {rss:.2f}x"
    )


def figures(run: Run) -> dict[str, Any]:
    return {
        "updates_made": run.made,
        "updates_seen": run.seen,
        "updates_per_second": round(run.per_second, 1),
        "delay_p50_ms": round(percentile(run.delays, 50) * 1000, 1),
        "delay_p99_ms": round(percentile(run.delays, 99) * 1000, 1),
        "rss_idle_mib": round(run.rss_idle / 1024 / 1024, 1),
        "rss_with_clients_mib": round(run.rss_with_clients / 1024 / 1024, 1),
        "rss_per_client_kib": round(run.rss_per_client / 1024, 1),
        "rss_peak_mib": round(run.rss_peak / 1024 / 1024, 1),
        "server_cpu_s": round(run.server_cpu, 2),
        "cpu_ms_per_update": round(run.cpu_per_update * 1000, 3),
        "requests_per_second": round(run.requests_per_second, 1),
        "errors": run.errors,
        "driver_late_p99_s": round(run.driver_late_p99, 2),
        "missing": run.missing,
        "duplicates": run.duplicates,
    }


# ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="default: SQLite in a temporary data dir")
    parser.add_argument("--redis-url", help="sets VIVID_REDIS_URL (pub/sub of events on SQLite, rate limits)")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0, help="over which each job's changes spread")
    parser.add_argument("--progress-steps", type=int, default=4, help="progress changes per job")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs there (stream.log, poll.log)")
    parser.add_argument(
        "--from-queued",
        action="store_true",
        help="clients follow the jobs from queued and the start is a timed change (default: the jobs"
        " are started before the clients come)",
    )
    parser.add_argument(
        "--driver-threads", type=int, help="default: 1 on SQLite (one writer at a time), 4 on PostgreSQL"
    )
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.progress_steps < 0 or (args.driver_threads or 1) < 1:
        parser.error("--clients, --seconds and --driver-threads must be positive, --progress-steps >= 0")
    file_limit = raise_file_limit()
    if file_limit < 2 * args.clients + 200:
        print(f"note: the file limit is {file_limit}; {args.clients} clients may run out of descriptors")

    with tempfile.TemporaryDirectory(prefix="vividflow-bench-events-") as tmp:
        workdir = Path(tmp)
        data_dir = workdir / "data"
        url = args.database_url or f"sqlite:///{data_dir / 'vividflow.db'}"
        data_dir.mkdir()
        postgres = make_url(url).get_backend_name() == "postgresql"
        database = Database(url, data_dir)
        secret, principal = database.prepare()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "VIVID_DATA_DIR": str(data_dir),
            "VIVID_DATABASE_URL": url,
            "VIVID_WORKERS": "0",
            "VIVID_RATE_LIMITS": "1000000000/hour",
            "VIVID_KEY_RATE_LIMITS": "",
            "VIVID_DAILY_LIMIT": "1000000000",
            "VIVID_MAX_STREAMS_PER_USER": str(args.clients + 10),
            "VIVID_MAX_CONNECTIONS": str(2 * args.clients + 100),
        }
        if args.redis_url:
            env["VIVID_REDIS_URL"] = args.redis_url
        else:
            env.pop("VIVID_REDIS_URL", None)
        if postgres:
            channel = "PostgreSQL LISTEN/NOTIFY"
        elif args.redis_url:
            channel = "SQLite, Redis pub/sub"
        else:
            seconds = float(os.environ.get("VIVID_EVENT_POLL_SECONDS", "1"))
            channel = f"SQLite, the server polls jobs.event_seq every {seconds:g} s"
        progress = tuple(
            round(100 * k / (args.progress_steps + 1)) for k in range(1, args.progress_steps + 1)
        )
        actions = ((START,) if args.from_queued else ()) + progress + (COMPLETE,)
        changes = len(actions)
        print(
            f"events: {args.clients} clients, {changes} changes per job"
            f" ({'start, ' if args.from_queued else ''}{args.progress_steps} progress, completed)"
            f" over {args.seconds:g} s"
            f" ({args.clients * changes / args.seconds:.0f} changes/s), committed by another process;"
            f" {channel}"
        )
        load = os.getloadavg()[0]
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            if not pool.submit(driver_ready, url).result(timeout=120):
                print(f"note: the driver runs at normal priority (nice {DRIVER_NICE} not allowed)")
            ctx = Context(
                database=database,
                principal=principal,
                headers={"X-API-Key": secret},
                env=env,
                workdir=workdir,
                clients=args.clients,
                seconds=args.seconds,
                actions=actions,
                from_queued=args.from_queued,
                driver_threads=args.driver_threads or (4 if postgres else 1),
                publish_url=args.redis_url if args.redis_url and not postgres else None,
                pool=pool,
            )
            try:
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    stream, stream_problems = phase(ctx, runner, "stream", stream_run)
                    polling, poll_problems = phase(ctx, runner, "poll", poll_run)
            finally:
                if args.log_dir is not None:
                    args.log_dir.mkdir(parents=True, exist_ok=True)
                    for log in workdir.glob("*.log"):
                        shutil.copy(log, args.log_dir / log.name)
        load_after = os.getloadavg()[0]
        print(
            f"machine: {os.cpu_count()} cores shared by the server, the clients, the driver and the"
            f" database; load average {load:.1f} before, {load_after:.1f} after"
        )
        report([stream, polling])
        for name, problems in (("stream", stream_problems), ("poll", poll_problems)):
            if problems:
                print(f"{name} server log: {len(problems)} warning/error lines, first: {problems[:3]}")
    print(
        json.dumps(
            {
                "clients": args.clients,
                "seconds": args.seconds,
                "changes_per_job": changes,
                "from_queued": args.from_queued,
                "channel": channel,
                "load_average": [round(load, 1), round(load_after, 1)],
                "stream": figures(stream),
                "polling": figures(polling),
                "p99_delay_polling_over_stream": round(
                    ratio(percentile(polling.delays, 99), percentile(stream.delays, 99)), 2
                ),
                "cpu_per_update_polling_over_stream": round(
                    ratio(polling.cpu_per_update, stream.cpu_per_update), 2
                ),
                "updates_per_second_stream_over_polling": round(
                    ratio(stream.per_second, polling.per_second), 2
                ),
            }
        )
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it): the clients' own overhead stays small."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
