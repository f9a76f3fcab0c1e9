"""Servers the tests start as processes of their own: wait until one answers, stop it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


def wait_until_answers(
    process: subprocess.Popen[bytes], url: str, log_path: Path, *, name: str, timeout: float = 120.0
) -> None:
    """Wait until ``GET url`` answers 200; fail (with the log's tail) if ``process`` exits first or
    ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{name} exited with {process.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{name} not ready after {timeout} s:\n{tail}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
