"""The turn queue (approvals/turn_queue.py) against a real Redis: each job runs once, at most `slots` at a
time; a stop finishes the running ones and takes no more; a job left by a consumer that died is claimed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from approvals.turn_queue import (
    GROUP,
    SLOTS_KEY,
    STREAM,
    TurnConsumer,
    enqueue,
    job_state,
    live_slots,
    queued_job_ids,
)


class Handler:
    """Turns that wait until released, recording what ran and how many ran at once."""

    def __init__(self, fail: str = "") -> None:
        self.ran: list[tuple[str, str]] = []
        self.release = asyncio.Event()
        self.running = 0
        self.most = 0
        self.fail = fail
        self.changed = asyncio.Condition()  # notified whenever `ran` or `running` changes

    async def until(self, what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait (on this loop: the consumer runs meanwhile) until `check` holds, at most `timeout` s."""
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(check), timeout)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}") from None

    async def _note(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def __call__(self, turn: str, attempt: str) -> str:
        self.ran.append((turn, attempt))
        self.running += 1
        self.most = max(self.most, self.running)
        await self._note()
        try:
            await self.release.wait()
            if turn == self.fail:
                raise RuntimeError("the token xoxb-secret was refused")  # its text must not be kept
            return f"answered {turn}"
        finally:
            self.running -= 1
            await self._note()


def sync(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


async def test_jobs_run_once_each_at_most_slots_at_once_and_a_stop_finishes_the_running_ones(
    aredis: aioredis.Redis, redis_url: str
) -> None:
    for turn in ("t1", "t2", "t3"):
        enqueue(sync(redis_url), turn)
    handler, stop = Handler(), asyncio.Event()
    consumer = TurnConsumer(aredis, "pool-a", handler, slots=2, pid=4242)
    serving = asyncio.create_task(consumer.serve(stop))
    await handler.until("two running", lambda: handler.running == 2)
    assert [turn for turn, _ in handler.ran] == ["t1", "t2"]  # in the order they were queued
    state = job_state(sync(redis_url), "t1")
    assert (state["status"], state["worker"], state["pid"]) == ("running", "pool-a", "4242")
    assert live_slots(sync(redis_url)) == 2
    stop.set()
    enqueue(sync(redis_url), "t4", "handoff")
    handler.release.set()
    assert await asyncio.wait_for(serving, 30) == 2
    assert handler.most == 2
    assert [turn for turn, _ in handler.ran] == ["t1", "t2"]  # nothing new once stopping
    assert job_state(sync(redis_url), "t1")["result"] == "answered t1"
    assert queued_job_ids(sync(redis_url)) == ["t3", "t4-handoff"]  # left for another consumer
    assert live_slots(sync(redis_url)) == 0  # no longer listening

    other = TurnConsumer(aredis, "pool-b", Handler(), slots=4)
    other._handler.release.set()  # type: ignore[attr-defined]
    assert await other.drain() == 2
    assert queued_job_ids(sync(redis_url)) == []
    assert await aredis.xlen(STREAM) == 0  # acknowledged entries are deleted


async def test_a_failed_run_is_recorded_by_its_type_only_and_not_run_again(
    aredis: aioredis.Redis, redis_url: str
) -> None:
    enqueue(sync(redis_url), "t1")
    handler = Handler(fail="t1")
    handler.release.set()
    assert await TurnConsumer(aredis, "pool-a", handler, slots=1).drain() == 1
    state = job_state(sync(redis_url), "t1")
    assert (state["status"], state["error"]) == ("failed", "RuntimeError")
    assert "xoxb" not in repr(state)
    assert await TurnConsumer(aredis, "pool-b", handler, slots=1).drain() == 0
    assert handler.ran == [("t1", "first")]


async def test_a_run_past_its_timeout_is_cancelled_and_recorded_failed(
    aredis: aioredis.Redis, redis_url: str
) -> None:
    enqueue(sync(redis_url), "t1")
    handler = Handler()  # never released
    assert await TurnConsumer(aredis, "pool-a", handler, slots=1, timeout=0.2).drain() == 1
    assert job_state(sync(redis_url), "t1")["error"] == "TimeoutError"
    assert handler.running == 0


async def test_a_job_left_by_a_dead_consumer_is_claimed_and_a_live_ones_is_not(
    aredis: aioredis.Redis, redis_url: str
) -> None:
    for turn in ("dead", "alive"):
        enqueue(sync(redis_url), turn)
    await aredis.xgroup_create(STREAM, GROUP, id="0")
    ((_, ((dead_id, _),)),) = await aredis.xreadgroup(GROUP, "dead-pool", {STREAM: ">"}, count=1)
    ((_, ((alive_id, _),)),) = await aredis.xreadgroup(GROUP, "live-pool", {STREAM: ">"}, count=1)
    await aredis.xclaim(STREAM, GROUP, "dead-pool", 0, [dead_id], idle=120_000, justid=True)  # silent 2 min
    handler, stop = Handler(), asyncio.Event()
    handler.release.set()
    serving = asyncio.create_task(TurnConsumer(aredis, "pool-a", handler, slots=2).serve(stop))
    await handler.until("the dead pool's job to run", lambda: handler.ran == [("dead", "first")])
    stop.set()
    await asyncio.wait_for(serving, 30)
    assert job_state(sync(redis_url), "dead")["status"] == "finished"
    pending = await aredis.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(alive_id, b"live-pool")]  # untouched


async def test_a_running_consumer_keeps_its_jobs_from_being_claimed(
    aredis: aioredis.Redis, redis_url: str
) -> None:
    enqueue(sync(redis_url), "t1")
    handler, stop = Handler(), asyncio.Event()
    consumer = TurnConsumer(aredis, "pool-a", handler, slots=1)
    serving = asyncio.create_task(consumer.serve(stop))
    await handler.until("running", lambda: handler.running == 1)
    (pending,) = await aredis.xpending_range(STREAM, GROUP, "-", "+", 10)
    await aredis.xclaim(STREAM, GROUP, "pool-a", 0, [pending["message_id"]], idle=120_000, justid=True)
    await consumer._beat()  # its heartbeat (every HEARTBEAT_SECONDS while serving)
    (pending,) = await aredis.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert pending["time_since_delivered"] < 10_000  # touched: no other consumer will claim it
    assert await aredis.zcard(SLOTS_KEY) == 1
    stop.set()
    handler.release.set()
    assert await asyncio.wait_for(serving, 30) == 1
