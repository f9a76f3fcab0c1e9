"""The server's periodic retention round (services.retention), every ``retention_interval_seconds``.

Every replica runs one; rounds are safe to overlap. The blocking work runs on the I/O pool, never on
the event loop, and a stopping server lets the running round finish the job it is at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from vividflow.apiserver.services import retention
from vividflow.apiserver.state import AppState

log = logging.getLogger(__name__)

FIRST_ROUND_SECONDS = 10.0
"""The first round starts this soon after the server (or after one interval, if shorter)."""
STOP_GRACE_SECONDS = 30.0
"""How long a stopping server waits for the running round before it abandons it."""


class RetentionTask:
    def __init__(self, state: AppState) -> None:
        self._state = state
        self._stopping = asyncio.Event()
        self._stop_flag = threading.Event()
        """The same signal for the round's thread, checked between jobs."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the rounds (none when retention is 0: files are kept forever)."""
        if self._state.settings.result_retention_days > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vividflow-retention")

    async def stop(self) -> None:
        self._stop_flag.set()
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE_SECONDS)
        except TimeoutError:
            log.warning("retention: the running round did not stop within %.0f s", STOP_GRACE_SECONDS)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        interval = self._state.settings.retention_interval_seconds
        delay = min(interval, FIRST_ROUND_SECONDS)
        while not await self._sleep(delay):
            await self._round()
            delay = interval

    async def _round(self) -> retention.Outcome | None:
        """One round on the I/O pool; None if it failed (logged; the next round tries again)."""
        state = self._state
        try:
            outcome = await state.run_io(
                retention.expire, state.session_factory, state.settings, should_stop=self._stop_flag.is_set
            )
        except Exception:
            log.exception("retention: the round failed")
            return None
        if outcome.expired or outcome.failed:
            log.info(
                "retention: deleted the inputs and results of %d jobs; %d left for the next round",
                outcome.expired,
                len(outcome.failed),
            )
        return outcome

    async def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; True if the task is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()
