"""Load on a running API: N concurrent clients for a fixed time on GET /status and POST /generate,
beside a bare FastAPI endpoint on the same machine as the ceiling.

    python bench/api_load.py [--database-url URL] [--redis-url URL] [--clients 50] [--seconds 10]

It starts its own servers (embedded mode with VIVID_WORKERS=0, so generate only queues) and drives
them with wrk (Debian package `wrk`; installed with apt-get if missing). Each server gets one
uvicorn process, the same for ours and the ceiling.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
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

    def line(self) -> str:
        return (
            f"{self.name:<34} {self.requests_per_second:>9.0f} req/s   p50 {self.p50_ms:>7.2f} ms"
            f"   p99 {self.p99_ms:>7.2f} ms   non-2xx {self.non_2xx}"
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


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)([a-z]*)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "": 1000.0}[unit]


def run_wrk(
    wrk: str,
    name: str,
    url: str,
    clients: int,
    seconds: int,
    headers: dict[str, str],
    script: Path | None = None,
) -> LoadResult:
    command = [wrk, "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", url]
    for key, value in headers.items():
        command += ["-H", f"{key}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def figure(pattern: str) -> str:
        # Anchored to a line of its own: "50%" also ends columns such as "+/- Stdev 72.50%".
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"wrk printed no {pattern!r}:\n{output}")
        return match.group(1)

    rps = float(figure(r"^Requests/sec:\s+([\d.]+)\s*$"))
    p50 = _ms(figure(r"^\s*50%\s+([\d.]+[a-z]*)\s*$"))
    p99 = _ms(figure(r"^\s*99%\s+([\d.]+[a-z]*)\s*$"))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return LoadResult(name, rps, p50, p99, int(non_2xx.group(1)) if non_2xx else 0)


def multipart_script(directory: Path) -> Path:
    """A wrk script that POSTs a multipart body with a small PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 90)).save(buffer, format="PNG")
    boundary = "vividflowbench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na bench\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + buffer.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    (directory / "body.bin").write_bytes(body)
    script = directory / "generate.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "multipart/form-data; boundary={boundary}"\n'
        f'local f = io.open("{directory / "body.bin"}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    return script


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="default: SQLite in a temporary data dir")
    parser.add_argument("--redis-url", help="default: rate limits in process")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
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

        results: list[LoadResult] = []
        port = free_port()
        serve = [PYTHON, "-m", "vividflow.cli", "serve", "--port", str(port)]
        with server(serve, env, port, workdir / "vividflow.log") as base:
            png = multipart_script(workdir)
            body = png.parent.joinpath("body.bin").read_bytes()
            job = httpx.post(
                f"{base}/api/v1/generate",
                headers={**headers, "Content-Type": "multipart/form-data; boundary=vividflowbench"},
                content=body,
            )
            job_id = job.json()["job_id"]
            results.append(
                run_wrk(
                    wrk,
                    "vividflow GET /status",
                    f"{base}/api/v1/status/{job_id}",
                    args.clients,
                    args.seconds,
                    headers,
                )
            )
            results.append(
                run_wrk(
                    wrk,
                    "vividflow POST /generate",
                    f"{base}/api/v1/generate",
                    args.clients,
                    args.seconds,
                    headers,
                    png,
                )
            )

        port = free_port()
        bare = [PYTHON, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port)]
        with server(bare, env, port, workdir / "bare.log") as base:
            ceiling = run_wrk(
                wrk, "bare FastAPI GET (ceiling)", f"{base}/api/v1/status/x", args.clients, args.seconds, {}
            )

    database = "PostgreSQL" if args.database_url else "SQLite"
    limits = "Redis" if args.redis_url else "in-process"
    print(f"api_load: {args.clients} clients x {args.seconds} s, {database}, rate limits {limits}")
    for result in (*results, ceiling):
        print(result.line())
    ratio = results[0].requests_per_second / ceiling.requests_per_second
    print(f"status throughput / ceiling = {ratio:.2f}")
    print(
        json.dumps(
            {
                "database": database,
                "limits": limits,
                "status_rps": round(results[0].requests_per_second),
                "status_p99_ms": results[0].p99_ms,
                "generate_rps": round(results[1].requests_per_second),
                "generate_p99_ms": results[1].p99_ms,
                "ceiling_rps": round(ceiling.requests_per_second),
                "ratio": round(ratio, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
