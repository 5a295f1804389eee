"""A turn's Stop as the loop sees it (flows.stopping over approvals.stops, real Redis)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as aioredis

from agent.stopping import Stopped, unless_stopped
from approvals.stops import STOP_TTL_SECONDS, TurnStops
from bot.redis_clients import async_client
from flows.stopping import StopWatch


async def test_a_stop_recorded_by_anyone_is_seen_and_only_the_first_one_counts(
    aredis: aioredis.Redis,
) -> None:
    stops = TurnStops(aredis)
    watch = StopWatch(stops, "t-1", poll_seconds=0.01)
    assert await watch.check() is None
    assert await stops.request("t-1", "U0ALICE") is True
    assert await stops.request("t-1", "U0BOB") is False
    assert await watch.check() == "<@U0ALICE>"

    never = asyncio.get_running_loop().create_future()
    assert await unless_stopped(never, watch) == Stopped("<@U0ALICE>")
    assert never.cancelled()  # the pending model call is cancelled, not left running


async def test_model_replies_that_win_the_race_never_wedge_the_shared_redis_pool(redis_url: str) -> None:
    """Each model reply cancels its turn's stop watch; cut off mid-command, a pooled connection was left
    unusable and every later turn on that worker hung (bench/turn). Many short races must all finish."""
    client = async_client(redis_url, max_connections=200)
    stops = TurnStops(client)

    async def model(i: int) -> int:
        # The model's latency, varied so its reply lands at every point of the watch's Redis round trip.
        answered = asyncio.Event()
        asyncio.get_running_loop().call_later(0.002 * (i % 7), answered.set)
        await answered.wait()
        return i

    async def turn(i: int) -> None:
        watch = StopWatch(stops, f"t-{i}", poll_seconds=0.0005)
        for _ in range(3):
            assert await unless_stopped(model(i), watch) == i

    try:
        async with asyncio.timeout(60):
            for _ in range(10):
                await asyncio.gather(*(turn(i) for i in range(20)))
    finally:
        await client.aclose()


async def test_a_cancel_python_dropped_mid_command_ends_the_turn_at_the_next_safe_point(
    aredis: aioredis.Redis,
) -> None:
    """Python 3.11's wait_for (redis-py's write timeout) can return a command's result and drop the cancel
    that landed meanwhile; the task still counts it. Reproduced by a task that swallows its own cancel."""
    watch = StopWatch(TurnStops(aredis), "t-dropped")
    reached: list[str] = []

    async def turn() -> None:
        this = asyncio.current_task()
        assert this is not None
        this.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # as the dropped cancel: nothing raised
            await asyncio.sleep(0)
        reached.append("after the dropped cancel")
        await watch.check()
        reached.append("past the safe point")

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(turn(), 10)
    assert reached == ["after the dropped cancel"]


async def test_the_servers_a_turn_uses_are_kept_as_long_as_the_turn(aredis: aioredis.Redis) -> None:
    stops = TurnStops(aredis)
    assert await stops.servers("t-1") == frozenset()  # before its first call
    await stops.using("t-1", "io.example/presto")
    await stops.using("t-1", "io.example/spark")
    await stops.using("t-1", "io.example/presto")
    assert await stops.servers("t-1") == {"io.example/presto", "io.example/spark"}
    assert await stops.servers("t-2") == frozenset()
    assert await aredis.ttl("chatops:turn-servers:t-1") > STOP_TTL_SECONDS  # a paused turn outlives a Stop's
