"""Who holds a lease (a job's, a webhook delivery's): unique per holder, and readable in the tables."""

from __future__ import annotations

import os
import secrets
import socket


def lease_holder(role: str) -> str:
    """``host:pid:role:random`` for one lease holder of this process (an executor, a webhook sender)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{role}:{secrets.token_hex(4)}"
