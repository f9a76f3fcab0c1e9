"""Load on a running API: N concurrent clients for a fixed time on GET /status and POST /generate,
beside a bare FastAPI endpoint on the same machine as the ceiling.

    python bench/api_load.py [--database-url URL] [--redis-url URL] [--clients 50] [--seconds 10]

It starts its own servers (embedded mode with VIVID_WORKERS=0, so generate only queues) and drives
them with wrk (Debian package `wrk`; installed with apt-get if missing), whose Lua ``done()`` hook
prints the figures as JSON. Each server gets one uvicorn process, the same for ours and the ceiling.
Status is measured with metrics off and on (``VIVID_METRICS_ENABLED``) and the ceiling after them,
in turn, ``--rounds`` times each; the best round of each is compared.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@dataclass
class LoadResult:
    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    """Connect, read and write errors and timeouts (wrk gives up on a request after 2 s)."""

    def line(self) -> str:
        return (
            f"{self.name:<40} {self.requests_per_second:>9.0f} req/s   p50 {self.p50_ms:>7.2f} ms"
            f"   p99 {self.p99_ms:>7.2f} ms   non-2xx {self.non_2xx}   socket errors {self.socket_errors}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


@contextmanager
def server(args: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    with log.open("wb") as sink:
        process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code in (200, 404):
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"server did not start; see {log}")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


SUMMARY_MARK = "VIVIDFLOW_WRK_SUMMARY "
SUMMARY_LUA = f"""
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{SUMMARY_MARK}{{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non_2xx":%d,"socket_errors":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
"""
"""wrk's Lua ``done()`` hook prints the figures as one JSON line: nothing is read from wrk's text table."""


def run_wrk(
    wrk: str,
    name: str,
    url: str,
    clients: int,
    seconds: int,
    headers: dict[str, str],
    workdir: Path,
    request_lua: str = "",
) -> LoadResult:
    script = workdir / f"wrk-{abs(hash((name, url)))}.lua"
    script.write_text(request_lua + SUMMARY_LUA)
    command = [wrk, "-t2", f"-c{clients}", f"-d{seconds}s", "-s", str(script), url]
    for key, value in headers.items():
        command += ["-H", f"{key}: {value}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    lines = [line for line in output.splitlines() if line.startswith(SUMMARY_MARK)]
    if len(lines) != 1:
        raise RuntimeError(f"wrk printed no summary line:\n{output}")
    summary = json.loads(lines[0][len(SUMMARY_MARK) :])
    seconds_run = summary["duration_us"] / 1e6
    return LoadResult(
        name,
        summary["requests"] / seconds_run,
        summary["p50_us"] / 1000,
        summary["p99_us"] / 1000,
        summary["non_2xx"],
        summary["socket_errors"],
    )


def multipart_body(directory: Path) -> tuple[Path, str]:
    """A multipart body with a small PNG, and the wrk Lua that POSTs it."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 90)).save(buffer, format="PNG")
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na bench\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + buffer.getvalue()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    path = directory / "body.bin"
    path.write_bytes(body)
    lua = (
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "multipart/form-data; boundary={BOUNDARY}"\n'
        f'local f = io.open("{path}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    return path, lua


BOUNDARY = "vividflowbench"


def measure_vividflow(
    wrk: str,
    env: dict[str, str],
    headers: dict[str, str],
    args: argparse.Namespace,
    workdir: Path,
    label: str,
) -> list[LoadResult]:
    """GET /status of a queued job, then (unless --status-only) POST /generate, on a fresh server."""
    port = free_port()
    serve = [PYTHON, "-m", "vividflow.cli", "serve", "--port", str(port)]
    results: list[LoadResult] = []
    with server(serve, env, port, workdir / f"vividflow-{label}.log") as base:
        body_path, generate_lua = multipart_body(workdir)
        job = httpx.post(
            f"{base}/api/v1/generate",
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=body_path.read_bytes(),
        )
        job_id = job.json()["job_id"]
        status_url = f"{base}/api/v1/status/{job_id}"
        results.append(
            run_wrk(
                wrk,
                f"vividflow GET /status ({label})",
                status_url,
                args.clients,
                args.seconds,
                headers,
                workdir,
            )
        )
        if label == "metrics on":
            results.append(
                run_wrk(
                    wrk,
                    f"vividflow POST /generate ({label})",
                    f"{base}/api/v1/generate",
                    args.clients,
                    args.seconds,
                    headers,
                    workdir,
                    generate_lua,
                )
            )
    return results


def measure_ceiling(wrk: str, env: dict[str, str], args: argparse.Namespace, workdir: Path) -> LoadResult:
    """A bare FastAPI endpoint served the same way (one uvicorn process), on a fresh server."""
    port = free_port()
    bare = [PYTHON, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port)]
    with server(bare, env, port, workdir / "bare.log") as base:
        url = f"{base}/api/v1/status/x"
        return run_wrk(wrk, "bare FastAPI GET (ceiling)", url, args.clients, args.seconds, {}, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="default: SQLite in a temporary data dir")
    parser.add_argument("--redis-url", help="default: rate limits in process")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating rounds of metrics off / on (status only)"
    )
    args = parser.parse_args()
    wrk = ensure_wrk()

    with tempfile.TemporaryDirectory(prefix="vividflow-bench-") as tmp:
        workdir = Path(tmp)
        env = {
            **os.environ,
            "VIVID_DATA_DIR": str(workdir / "data"),
            "VIVID_WORKERS": "0",
            "VIVID_RATE_LIMITS": "100000000/hour",
            "VIVID_DAILY_LIMIT": "100000000",
            "VIVID_LOG_FORMAT": "json",
        }
        for name, value in (("VIVID_DATABASE_URL", args.database_url), ("VIVID_REDIS_URL", args.redis_url)):
            if value:
                env[name] = value
            else:
                env.pop(name, None)
        created = subprocess.run(
            [PYTHON, "-m", "vividflow.cli", "keys", "create", "--user", "bench@example.com"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        headers = {"X-API-Key": created.stdout.strip().splitlines()[-1]}

        # Metrics off, metrics on and the ceiling, in turn each round, so that drift of the machine
        # hits all three alike.
        runs: dict[str, list[LoadResult]] = {"metrics off": [], "metrics on": []}
        ceilings: list[LoadResult] = []
        for _ in range(args.rounds):
            for label, enabled in (("metrics off", "false"), ("metrics on", "true")):
                runs[label] += measure_vividflow(
                    wrk, {**env, "VIVID_METRICS_ENABLED": enabled}, headers, args, workdir, label
                )
            ceilings.append(measure_ceiling(wrk, env, args, workdir))
        ceiling = max(ceilings, key=lambda r: r.requests_per_second)

    def best_status(label: str) -> LoadResult:
        return max((r for r in runs[label] if "/status" in r.name), key=lambda r: r.requests_per_second)

    status_on, status_off = best_status("metrics on"), best_status("metrics off")
    generate = max(
        (r for r in runs["metrics on"] if "/generate" in r.name), key=lambda r: r.requests_per_second
    )
    database = "PostgreSQL" if args.database_url else "SQLite"
    limits = "Redis" if args.redis_url else "in-process"
    print(
        f"api_load: {args.clients} clients x {args.seconds} s, {database}, rate limits {limits}, "
        f"{args.rounds} rounds"
    )
    for result in (*runs["metrics off"], *runs["metrics on"], *ceilings):
        print(result.line())
    ratio = status_on.requests_per_second / ceiling.requests_per_second
    metrics_ratio = status_on.requests_per_second / status_off.requests_per_second
    print(f"status throughput / ceiling = {ratio:.2f} (best round of each, metrics on)")
    print(f"status throughput, metrics on / off = {metrics_ratio:.2f} (best round of each)")
    print(
        json.dumps(
            {
                "database": database,
                "limits": limits,
                "status_rps": round(status_on.requests_per_second),
                "status_rps_metrics_off": round(status_off.requests_per_second),
                "status_p99_ms": status_on.p99_ms,
                "generate_rps": round(generate.requests_per_second),
                "generate_p99_ms": generate.p99_ms,
                "ceiling_rps": round(ceiling.requests_per_second),
                "ratio": round(ratio, 2),
                "metrics_on_off_ratio": round(metrics_ratio, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
