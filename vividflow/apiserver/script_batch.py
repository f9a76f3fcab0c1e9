"""One Redis Lua script, called by many requests at once, sent as one pipeline per event-loop turn.

Under load, the requests that reach their rate-limit hit in the same turn of the loop would each
write one ``EVALSHA`` and wait for its reply: a system call and a connection each. Their calls
are queued instead and sent together at the end of the turn (``call_soon``): one write, one read,
one connection. Each call is still its own ``EVALSHA``, so each runs atomically in Redis as before,
in the order the requests made them; a batch adds at most one turn of the loop to a request.

A reply that is an error goes to its own caller; a failure of the whole batch (Redis down) to every
caller in it. A Redis that lost the script (restart, ``SCRIPT FLUSH``) gets it loaded again and the
batch resent once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio
from redis.exceptions import NoScriptError

MAX_BATCH = 256
"""Calls in one pipeline at most; more in the same turn go in further pipelines."""

_Call = tuple[Sequence[str], Sequence[int | str], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(self, client: redis.asyncio.Redis, script: str) -> None:
        self._client = client
        self._script = client.register_script(script)
        self._queued: list[_Call] = []
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: Sequence[str], arguments: Sequence[int | str]) -> Any:
        """The script's reply for ``keys`` and ``arguments`` (as ``AsyncScript.__call__``)."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._send_queued)
        self._queued.append((keys, arguments, reply))
        return await reply

    def _send_queued(self) -> None:
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), MAX_BATCH):
            task = asyncio.ensure_future(self._send(queued[start : start + MAX_BATCH]))
            self._running.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._running.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            replies = await self._pipeline(calls)
            if any(isinstance(reply, NoScriptError) for reply in replies):
                await self._client.script_load(self._script.script)
                replies = await self._pipeline(calls)
        except asyncio.CancelledError:  # the loop is closing
            for _, _, reply in calls:
                reply.cancel()
            raise
        except Exception as error:  # every caller hears of it
            for _, _, reply in calls:
                if not reply.done():
                    reply.set_exception(error)
            return
        for (_, _, reply), result in zip(calls, replies, strict=True):
            if reply.done():  # its request was cancelled meanwhile
                continue
            if isinstance(result, Exception):
                reply.set_exception(result)
            else:
                reply.set_result(result)

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, arguments, _ in calls:
                pipe.evalsha(self._script.sha, len(keys), *keys, *arguments)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
