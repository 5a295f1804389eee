"""The agent turn queue: a Redis Stream with one consumer group, read by the turn pools (bot.turn_pool).

Ours rather than RQ's, because a turn pool runs many turns as tasks on one event loop, which RQ's workers
are not built for (each runs one job, in a work-horse or a thread): making RQ do it meant overriding its
private methods and writing its keys. RQ keeps what it is good at: approved actions and workflows, each in
a forked work-horse. Every key here is ours:

- `STREAM` (`chatops:turn-queue`): one entry per job (`turn`, `attempt`, `job`), read by the group `GROUP`
  (XREADGROUP: each entry goes to one consumer). An entry is acknowledged and deleted when its run ends,
  finished or failed: no retry here, a run whose worker died is recovered by the turn leases and the sweep
  (flows/recovery.py), which enqueue a new attempt.
- `chatops:turn-job:{job}`: the job's state for people and tools: `queued`, `running` (which pool, its pid),
  `finished` (the result) or `failed` (the exception's type only: no message, it could carry a secret).
- `SLOTS_KEY`: slot name -> when its heartbeat lapses: the slots listening (doctor, metrics).

An entry taken by a pool that dies before acknowledging it stays pending on that consumer. Live consumers
touch their own entries every HEARTBEAT_SECONDS (XCLAIM to themselves resets the idle time) and claim any
entry idle for CLAIM_IDLE_SECONDS (XAUTOCLAIM): a run that had started stops at its claim (a duplicate,
TurnStore.start), one that never started runs now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis import Redis
from redis.exceptions import RedisError, ResponseError

from approvals.turns import JOB_TTL_SECONDS, QueuedJob

__all__ = [
    "GROUP",
    "SLOTS_KEY",
    "STREAM",
    "Entry",
    "TurnConsumer",
    "enqueue",
    "first_job",
    "job_id_for",
    "job_key",
    "job_state",
    "live_slots",
    "queue_standing",
    "queued_job_ids",
]

log = logging.getLogger(__name__)

STREAM = "chatops:turn-queue"
GROUP = "turn-pools"
SLOTS_KEY = "chatops:turn-slots"
JOB_TIMEOUT_SECONDS = 900
HEARTBEAT_SECONDS = 10.0
CLAIM_IDLE_SECONDS = 60.0  # six missed heartbeats: the consumer holding the entry is gone
CLAIM_EVERY_SECONDS = 15.0
READ_BLOCK_SECONDS = 2.0  # how long a read waits before the consumer looks at its stop flag again

Handler = Callable[[str, str], Awaitable[str]]


def job_id_for(turn_id: str, attempt: str) -> str:
    """The first attempt's job is named by the turn; later ones add the attempt (idempotent names)."""
    return turn_id if attempt == "first" else f"{turn_id}-{attempt}"


def job_key(job_id: str) -> str:
    return f"chatops:turn-job:{job_id}"


def _queued(turn_id: str, attempt: str) -> tuple[str, dict[str, str], dict[str, str]]:
    job_id = job_id_for(turn_id, attempt)
    state = {"status": "queued", "turn": turn_id, "attempt": attempt, "queued_at": repr(time.time())}
    return job_id, state, {"turn": turn_id, "attempt": attempt, "job": job_id}


def first_job(turn_id: str) -> QueuedJob:
    """A new turn's first job, for `TurnStore.admit` to queue in the step that admits the turn."""
    job_id, state, entry = _queued(turn_id, "first")
    return QueuedJob(job_id, job_key(job_id), STREAM, state, entry)


def enqueue(connection: Redis, turn_id: str, attempt: str = "first") -> str:
    """Queue a run of `turn_id` (one round trip: the job's state and the stream entry together)."""
    job_id, state, entry = _queued(turn_id, attempt)
    with connection.pipeline(transaction=True) as pipe:
        pipe.hset(job_key(job_id), mapping=state)  # type: ignore[arg-type]
        pipe.expire(job_key(job_id), JOB_TTL_SECONDS)
        pipe.xadd(STREAM, entry)  # type: ignore[arg-type]
        pipe.execute()
    return job_id


def job_state(connection: Redis, job_id: str) -> dict[str, str]:
    """The job's state (`status`, `worker`, `pid`, `result`, ...); empty when there is no such job."""
    raw: Mapping[bytes, bytes] = connection.hgetall(job_key(job_id))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def queued_job_ids(connection: Redis) -> list[str]:
    """Jobs waiting on the queue, oldest first (taken by no consumer yet)."""
    taken: set[bytes] = set()
    with contextlib.suppress(ResponseError):  # no group yet: nothing was taken
        pending: list[dict[str, Any]] = connection.xpending_range(STREAM, GROUP, "-", "+", 10_000)
        taken = {p["message_id"] for p in pending}
    entries: list[tuple[bytes, dict[bytes, bytes]]] = connection.xrange(STREAM)  # type: ignore[assignment]
    return [fields[b"job"].decode() for entry_id, fields in entries if entry_id not in taken]


# KEYS: the stream. ARGV: the group. Entries no consumer has taken yet (acknowledged ones are deleted).
WAITING_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('XLEN', KEYS[1])
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
if ok then n = n - pending[1] end
return n
"""


def queue_standing(pipe: Any) -> None:
    """Queue on a pipeline (async or not) the commands for (slots listening, entries waiting)."""
    pipe.zcount(SLOTS_KEY, time.time(), "+inf")
    pipe.eval(WAITING_SCRIPT, 1, STREAM, GROUP)


def live_slots(connection: Redis) -> int:
    return int(connection.zcount(SLOTS_KEY, time.time(), "+inf"))


@dataclass(frozen=True)
class Entry:
    id: bytes
    turn: str
    attempt: str
    job: str


def _entries(raw: list[Any]) -> list[Entry]:
    found = []
    for entry_id, fields in raw:
        if fields:  # None for an entry deleted while pending
            text = {k.decode(): v.decode() for k, v in fields.items()}
            found.append(Entry(entry_id, text["turn"], text["attempt"], text["job"]))
    return found


class TurnConsumer:
    """One consumer of the group: up to `slots` runs at once, each a task on the running event loop."""

    def __init__(
        self,
        redis: aioredis.Redis,
        name: str,
        handler: Handler,
        *,
        slots: int,
        pid: int = 0,
        timeout: float = JOB_TIMEOUT_SECONDS,
    ) -> None:
        self._redis = redis
        self.name = name
        self._handler = handler
        self.slots = slots
        self._pid = pid
        self._timeout = timeout
        self._running: dict[bytes, asyncio.Task[None]] = {}
        self.ran = 0

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def serve(self, stop: asyncio.Event) -> int:
        """Take entries until `stop` is set, then let the running ones finish; return how many ran."""
        loop = asyncio.get_running_loop()
        next_beat = next_claim = 0.0
        backoff = 1.0
        while not stop.is_set():
            try:
                if next_beat <= loop.time():
                    await self.ensure_group()  # again after each beat: a flushed Redis loses it
                    await self._beat()
                    next_beat = loop.time() + HEARTBEAT_SECONDS
                free = self.slots - len(self._running)
                if free <= 0:
                    await asyncio.wait(
                        self._running.values(), timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                    )
                    continue
                entries: list[Entry] = []
                if next_claim <= loop.time():
                    entries = await self._claim_idle(free)
                    next_claim = loop.time() + CLAIM_EVERY_SECONDS
                if not entries:
                    entries = await self._read(free, block=READ_BLOCK_SECONDS)
                for entry in entries:
                    if stop.is_set():  # taken while stopping: another consumer's, untouched
                        await self._give_back(entry)
                    else:
                        self._start(entry)
                backoff = 1.0
            except (RedisError, OSError) as exc:  # Redis gone: the consumer must live on
                log.error(
                    "turn consumer %s: %s (%s); again in %.0f s", self.name, type(exc).__name__, exc, backoff
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 30.0)
        await self._finish_running()
        return self.ran

    async def drain(self) -> int:
        """Run what waits now and what those runs enqueue, until the queue is empty (`--burst`)."""
        if not await self._redis.exists(STREAM):
            return 0  # nothing was ever queued: a burst that finds nothing leaves nothing behind either
        await self.ensure_group()
        while entries := await self._read(self.slots, block=None):
            await asyncio.gather(*(self._run(entry) for entry in entries))
        await self._leave()
        return self.ran

    async def _finish_running(self) -> None:
        while self._running:
            await asyncio.wait(self._running.values(), timeout=HEARTBEAT_SECONDS)
            with contextlib.suppress(RedisError, OSError):
                await self._beat()
        with contextlib.suppress(RedisError, OSError):
            await self._leave()

    async def _read(self, count: int, *, block: float | None) -> list[Entry]:
        raw: Any = await self._redis.xreadgroup(
            GROUP, self.name, {STREAM: ">"}, count=count, block=None if block is None else int(block * 1000)
        )
        return [entry for _, entries in raw or [] for entry in _entries(entries)]

    async def _claim_idle(self, count: int) -> list[Entry]:
        """Entries another consumer took and has not touched for CLAIM_IDLE_SECONDS: its pool is gone."""
        raw = await self._redis.xautoclaim(
            STREAM, GROUP, self.name, int(CLAIM_IDLE_SECONDS * 1000), count=count
        )
        claimed = _entries(raw[1])
        for entry in claimed:
            log.warning(
                "turn consumer %s: took over %s, left by a consumer that stopped", self.name, entry.job
            )
        return claimed

    async def _beat(self) -> None:
        """Say this consumer's slots listen, and touch its running entries so nobody claims them."""
        until = time.time() + 3 * HEARTBEAT_SECONDS
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(SLOTS_KEY, {f"{self.name}.{i}": until for i in range(self.slots)})
            pipe.zremrangebyscore(SLOTS_KEY, "-inf", time.time())
            if self._running:
                pipe.xclaim(STREAM, GROUP, self.name, 0, list(self._running), justid=True)
            await pipe.execute()

    async def _leave(self) -> None:
        """No longer listening; forget the consumer unless something is still pending on it."""
        await self._redis.zrem(SLOTS_KEY, *(f"{self.name}.{i}" for i in range(self.slots)))
        pending = await self._redis.xpending_range(STREAM, GROUP, "-", "+", 1, consumername=self.name)
        if not pending:
            await self._redis.xgroup_delconsumer(STREAM, GROUP, self.name)

    async def _give_back(self, entry: Entry) -> None:
        """An entry read just as the stop came: queue it again (at the tail) for another consumer."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(STREAM, {"turn": entry.turn, "attempt": entry.attempt, "job": entry.job})
            pipe.xack(STREAM, GROUP, entry.id)
            pipe.xdel(STREAM, entry.id)
            await pipe.execute()
        log.info("turn consumer %s: stopping; %s left on the queue for another worker", self.name, entry.job)

    def _start(self, entry: Entry) -> None:
        task = asyncio.create_task(self._run(entry), name=f"turn {entry.job}")
        self._running[entry.id] = task
        task.add_done_callback(lambda _: self._running.pop(entry.id, None))

    async def _run(self, entry: Entry) -> None:
        key = job_key(entry.job)
        started = {"status": "running", "worker": self.name, "pid": str(self._pid), "at": repr(time.time())}
        # Written beside the run, not before it: the person waits for the turn's first model request.
        running = asyncio.ensure_future(self._settle(entry, lambda pipe: pipe.hset(key, mapping=started)))
        try:
            result = await asyncio.wait_for(self._handler(entry.turn, entry.attempt), self._timeout)
            outcome = {"status": "finished", "result": str(result)}
        except Exception as exc:  # the run failed; it is recorded, never retried (see the module doc)
            log.exception("turn consumer %s: %s failed", self.name, entry.job)
            outcome = {"status": "failed", "error": type(exc).__name__}
        finally:
            await running  # a quick run's outcome must not be overwritten by "running"
        self.ran += 1
        outcome["at"] = repr(time.time())

        def done(pipe: Any) -> None:
            pipe.hset(key, mapping=outcome)
            pipe.expire(key, JOB_TTL_SECONDS)
            pipe.xack(STREAM, GROUP, entry.id)
            pipe.xdel(STREAM, entry.id)

        await self._settle(entry, done)

    async def _settle(self, entry: Entry, commands: Callable[[Any], None]) -> None:
        """Write the job's bookkeeping, once more after a failure (a connection Redis closed while idle,
        after a restart). Never raises: if it still fails, the entry stays pending on this consumer, and
        another consumer claims it later, where it stops at the turn's claim (a duplicate)."""
        for attempt in (1, 2):
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    commands(pipe)
                    await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                if attempt == 2:
                    log.error("turn consumer %s: %s: %s (%s)", self.name, entry.job, type(exc).__name__, exc)
