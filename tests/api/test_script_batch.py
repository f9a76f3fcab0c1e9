"""ScriptBatcher against the suite's Redis: one pipeline per turn, replies and errors to their callers."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tests.ports import free_port
from vividflow.apiserver.script_batch import MAX_BATCH, ScriptBatcher

COUNTER_SCRIPT = """
if ARGV[1] == 'fail' then
    return redis.error_reply('asked to fail')
end
return {KEYS[1], redis.call('incrby', KEYS[1], tonumber(ARGV[1]))}
"""


class CountingRedis(redis.asyncio.Redis):
    """The real client, counting the pipelines it opens."""

    pipelines = 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        self.pipelines += 1
        return super().pipeline(transaction, shard_hint)


def test_calls_of_one_turn_share_one_pipeline_and_each_gets_its_own_reply(fresh_redis_url: str) -> None:
    async def scenario() -> tuple[list[Any], int, int]:
        client = CountingRedis.from_url(fresh_redis_url)
        batcher = ScriptBatcher(client, COUNTER_SCRIPT)
        await batcher(["warm-up"], [1])  # the script is loaded first if this Redis lacks it
        client.pipelines = 0
        replies = await asyncio.gather(*(batcher([f"counter-{n % 3}"], [n]) for n in range(60)))
        pipelines = client.pipelines
        total = sum([int(await client.get(f"counter-{k}") or 0) for k in range(3)])
        await client.aclose()
        return replies, pipelines, total

    replies, pipelines, total = asyncio.run(scenario())
    assert pipelines == 1
    assert [key.decode() for key, _ in replies] == [f"counter-{n % 3}" for n in range(60)]
    # In call order: counter-k's n-th reply is the sum of its calls so far.
    for k in range(3):
        counts = [count for key, count in replies if key.decode() == f"counter-{k}"]
        assert counts == [sum(range(k, n + 1, 3)) for n in range(k, 60, 3)]
    assert total == sum(range(60))


def test_a_turn_larger_than_a_batch_goes_in_several_pipelines(fresh_redis_url: str) -> None:
    async def scenario() -> tuple[int, int]:
        client = CountingRedis.from_url(fresh_redis_url)
        batcher = ScriptBatcher(client, COUNTER_SCRIPT)
        await batcher(["warm-up"], [1])
        client.pipelines = 0
        await asyncio.gather(*(batcher(["big"], [1]) for _ in range(MAX_BATCH + 1)))
        count = int(await client.get("big") or 0)
        await client.aclose()
        return client.pipelines, count

    assert asyncio.run(scenario()) == (2, MAX_BATCH + 1)


def test_an_error_reply_goes_to_its_caller_only(fresh_redis_url: str) -> None:
    async def scenario() -> list[Any]:
        client = redis.asyncio.Redis.from_url(fresh_redis_url)
        batcher = ScriptBatcher(client, COUNTER_SCRIPT)
        results = await asyncio.gather(
            batcher(["a"], [1]), batcher(["b"], ["fail"]), batcher(["a"], [2]), return_exceptions=True
        )
        await client.aclose()
        return results

    first, failed, third = asyncio.run(scenario())
    assert isinstance(failed, ResponseError) and "asked to fail" in str(failed)
    assert first == [b"a", 1] and third == [b"a", 3]


def test_a_flushed_script_is_loaded_again(fresh_redis_url: str) -> None:
    async def scenario() -> tuple[Any, Any]:
        client = redis.asyncio.Redis.from_url(fresh_redis_url)
        batcher = ScriptBatcher(client, COUNTER_SCRIPT)
        before = await batcher(["k"], [5])
        await client.script_flush()
        after = await batcher(["k"], [5])
        await client.aclose()
        return before, after

    assert asyncio.run(scenario()) == ([b"k", 5], [b"k", 10])


def test_an_unreachable_redis_fails_every_caller() -> None:
    async def scenario() -> list[Any]:
        client = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=2)
        batcher = ScriptBatcher(client, COUNTER_SCRIPT)
        results = await asyncio.gather(*(batcher(["k"], [1]) for _ in range(3)), return_exceptions=True)
        await client.aclose()
        return results

    results = asyncio.run(scenario())
    assert len(results) == 3 and all(isinstance(result, RedisConnectionError) for result in results)
