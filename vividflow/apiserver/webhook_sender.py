"""Sends the webhook outbox (services.webhooks) to the receivers: one asyncio task per server process.

The task claims due deliveries with a lease and POSTs each one, signed per the Standard Webhooks
specification, from a coroutine of its own (at most ``MAX_IN_FLIGHT`` at once; no thread per delivery).
It wakes when this process commits a job event (services.events listeners) and otherwise looks for
due deliveries (retries, and those other servers' events or dead senders left) at least every
``POLL_SECONDS``. Each attempt vets the URL again (the private-address guard of image URLs, on the
addresses the name resolves to now) and follows no redirect. The database work runs on the DB pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from vividflow import __version__
from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.identity import lease_holder
from vividflow.apiserver.metrics import WEBHOOK_DELIVERIES
from vividflow.apiserver.services import events, webhooks
from vividflow.apiserver.services.events import Announced
from vividflow.apiserver.services.webhooks import Attempt, Claimed
from vividflow.apiserver.state import AppState
from vividflow.jobspec import aware_utc
from vividflow.storage import fetch
from vividflow.storage.errors import StorageError

log = logging.getLogger(__name__)
_OUTCOMES = {webhooks.PENDING: "retrying"}
"""Metric outcomes that differ from the delivery's state (a pending delivery after an attempt will be
retried); None (the lease was lost meanwhile) counts as ``lease_lost``."""

USER_AGENT = f"vividflow-webhooks/{__version__}"
MAX_IN_FLIGHT = 32
"""Deliveries one server sends at once."""
POLL_SECONDS = 1.0
"""Longest wait before looking for due deliveries again."""
MIN_WAIT_SECONDS = 0.02
LEASE_FACTOR = 2.0
"""A delivery's lease lasts this many timeouts: an attempt ends by its timeout, then its outcome is
recorded; a sender that died holds it no longer than that."""
STOP_GRACE_SECONDS = 5.0
"""How long a stopping server lets its attempts finish; the rest are released for any server."""
MAX_ERROR_CHARS = 500


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from ``now`` (aware UTC)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (aware_utc(moment) - now).total_seconds())


def signed_headers(claimed: Claimed, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: a fresh timestamp, one ``v1,`` signature per
    signing secret (space-separated)."""
    signatures = [
        Webhook(secret).sign(claimed.message_id, now, claimed.payload) for secret in claimed.secrets
    ]
    return {
        "webhook-id": claimed.message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
        "Content-Type": "application/json",
    }


class WebhookSender:
    def __init__(self, state: AppState) -> None:
        self._state = state
        self._owner = lease_holder("webhooks")
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        events.add_listener(self._announced)
        self._task = self._loop.create_task(self._run(), name="vividflow-webhooks")

    async def stop(self) -> None:
        events.remove_listener(self._announced)
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if not self._in_flight:
            return
        _, unfinished = await asyncio.wait(self._in_flight, timeout=STOP_GRACE_SECONDS)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if unfinished:
            try:
                await self._state.run_db(self._release)
            except Exception:  # the leases expire on their own
                log.exception("webhooks: releasing the unfinished deliveries failed")

    def _announced(self, announced: Announced) -> None:
        """A job event committed in this process (on the committing thread): look for deliveries now."""
        if webhooks.webhook_event(announced.kind) is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                wait = await self._round()
            except Exception:  # the database is away, say: try again later
                log.exception("webhooks: claiming deliveries failed")
                wait = POLL_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _round(self) -> float:
        """Claim what is due while there are free slots and start sending it; how long to wait."""
        free = MAX_IN_FLIGHT - len(self._in_flight)
        if free <= 0:
            return POLL_SECONDS  # a finished delivery wakes the loop
        claimed, soonest = await self._state.run_db(self._claim, free)
        for delivery in claimed:
            task = asyncio.get_running_loop().create_task(self._deliver(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        if soonest is None:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(MIN_WAIT_SECONDS, (soonest - utcnow()).total_seconds()))

    def _claim(self, limit: int) -> tuple[list[Claimed], datetime | None]:
        settings = self._state.settings
        lease = settings.webhook_timeout_seconds * LEASE_FACTOR
        with self._state.session_factory.begin() as session:
            claimed = webhooks.claim_due(
                session, self._owner, lease, limit, settings.webhook_secret_overlap_seconds
            )
        with self._state.session_factory() as session:
            return claimed, webhooks.next_due(session)

    def _settle(self, claimed: Claimed, attempt: Attempt) -> str | None:
        retry_seconds = self._state.settings.webhook_retry_seconds
        with self._state.session_factory.begin() as session:
            return webhooks.settle(session, claimed, self._owner, attempt, retry_seconds)

    def _release(self) -> int:
        with self._state.session_factory.begin() as session:
            return webhooks.release(session, self._owner)

    async def _deliver(self, claimed: Claimed) -> None:
        try:
            attempt = await self.attempt(claimed)
            state = await self._state.run_db(self._settle, claimed, attempt)
            outcome = "lease_lost" if state is None else _OUTCOMES.get(state, state)
            WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()
            log.info(
                "webhooks: %s of job %s, attempt %d: %s (%s)",
                claimed.event,
                claimed.job_id,
                claimed.attempt,
                attempt.status_code or attempt.error,
                state or "lease lost",
            )
        except Exception:
            log.exception("webhooks: delivering %s failed", claimed.message_id)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()  # a slot is free

    async def attempt(self, claimed: Claimed) -> Attempt:
        """POST the delivery once (the URL vetted again first); what came of it."""
        settings = self._state.settings
        timeout = settings.webhook_timeout_seconds
        now = datetime.now(UTC)
        headers = signed_headers(claimed, now)
        try:
            async with asyncio.timeout(timeout):
                target = await fetch.vet_url(claimed.url, settings, noun="webhook URL")
                async with fetch.guarded_client(settings, timeout, {"User-Agent": USER_AGENT}) as client:
                    response = await fetch.send_vetted(
                        client, target, "POST", content=claimed.payload.encode(), headers=headers
                    )
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            return Attempt(None, f"no answer within {timeout:g} seconds")
        except StorageError as error:  # refused by the guard, or no connection
            return Attempt(None, error.message[:MAX_ERROR_CHARS])
        except httpx.HTTPError as error:
            return Attempt(None, f"the request failed ({type(error).__name__})")
        return _outcome(response, now)


def _outcome(response: httpx.Response, now: datetime) -> Attempt:
    code = response.status_code
    if 200 <= code < 300:
        return Attempt(code)
    if code == 410:
        return Attempt(code, "the receiver answered HTTP 410 Gone: the job's webhook is disabled")
    if 300 <= code < 400:
        return Attempt(code, f"the receiver answered HTTP {code}; redirects are not followed")
    retry_after = (
        retry_after_seconds(response.headers.get("retry-after"), now) if code in (429, 503) else None
    )
    return Attempt(code, f"the receiver answered HTTP {code}", retry_after)
