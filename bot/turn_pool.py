"""The turn pool: agent turns run as tasks on one long-lived event loop, many at a time, in one process.

Why not a forked work-horse per turn: a turn is almost all waiting (for the model, for tools), yet each one
paid ~25 ms before its first step (the fork of a large parent, bookkeeping in a cold process, new
connections to Redis, the model, Slack and the MCP servers) and held a whole process while it waited. Here
turns share one process, whose connection pools stay warm, and a waiting conversation costs a task.

The pool is one consumer of the turn queue (approvals.turn_queue, a Redis Stream of our own) with
`CHATOPS_TURN_CONCURRENCY` slots. Approved actions and workflows keep RQ's forking worker: one process per
action, so a crash is contained and is seen as the work-horse's death (OUTCOME_UNKNOWN).

Stopping: SIGTERM or SIGINT stops taking turns and lets running ones finish; a second one exits at once
(turn leases then lapse and the sweep takes the turns over, flows/recovery.py). `chatops worker` forwards
its own stop as SIGUSR1, which never counts as that second signal: a supervisor that signals the whole
process group (systemd, Heroku) reaches the pool twice, once directly and once through its parent, and
that is one stop. A pool forked by `chatops worker` also stops when that parent goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from types import FrameType

from approvals.turn_queue import TurnConsumer
from bot import jobs
from bot.identity import BotIdentity
from bot.queues import AGENT
from bot.redis_clients import async_client
from bot.settings import Settings
from bot.stopping import log_in_handler

__all__ = ["TurnPool", "TurnThread", "drain_turns"]

log = logging.getLogger(__name__)

PARENT_CHECK_SECONDS = 1.0
FORWARDED_STOP = signal.SIGUSR1  # what `chatops worker` sends its pools (bot.worker)


class TurnPool:
    """One consumer of the turn queue with `slots` slots, its turns on this process's event loop."""

    def __init__(self, settings: Settings, bot: BotIdentity, slots: int, *, name: str | None = None) -> None:
        self.settings, self.bot = settings, bot
        self.redis_url = str(settings.redis_url)
        self.slots = slots
        self.name = name or f"{os.uname().nodename}.{os.getpid()}.turns"
        self._signals = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def run(self, *, parent: int | None = None) -> int:
        """Serve until stopped (a signal, or `parent` gone); return the process's exit status."""
        signal.signal(
            signal.SIGTERM, self._on_signal
        )  # first: a stop during start-up must not kill it mid-way
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(FORWARDED_STOP, self._on_forwarded)
        return asyncio.run(self._serve(parent))

    async def _serve(self, parent: int | None) -> int:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        if self._stopping:
            self._stop.set()
        redis = async_client(self.redis_url)
        watch = asyncio.create_task(self._watch(parent))
        try:
            async with jobs.resident_turns(self.settings, self.bot) as run_turn:
                consumer = TurnConsumer(redis, self.name, run_turn, slots=self.slots, pid=os.getpid())
                log.info("turn pool %s: %d slots on %s", self.name, self.slots, AGENT)
                await consumer.serve(self._stop)
            return 0
        except Exception:
            log.exception("turn pool %s failed", self.name)
            return 1
        finally:
            watch.cancel()
            await redis.aclose()

    async def _watch(self, parent: int | None) -> None:
        while parent is not None:
            await asyncio.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != parent and not self._stopping:
                log.warning("turn pool %s: its worker process is gone; finishing its turns", self.name)
                self._request_stop()

    def _request_stop(self) -> None:
        self._stopping = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            self._stopping_now(f"signal {signum}")
            return
        log_in_handler(
            log, logging.WARNING, "turn pool %s: stopping now; running turns are left to the sweep", self.name
        )
        os._exit(1)

    def _on_forwarded(self, signum: int, frame: FrameType | None) -> None:
        self._stopping_now("asked by its worker")

    def _stopping_now(self, why: str) -> None:
        # The stop first, then its log line, which a signal handler can lose (bot.stopping.log_in_handler).
        already = self._stopping
        self._request_stop()
        if already:
            log_in_handler(
                log,
                logging.INFO,
                "turn pool %s: %s; already stopping after the running turns",
                self.name,
                why,
            )
        else:
            log_in_handler(
                log, logging.INFO, "turn pool %s: stopping after the running turns (%s)", self.name, why
            )


class TurnThread:
    """`chatops worker --simple`: one slot in a thread of the RQ worker's process, each turn building its own
    clients (no resident services), for scripts and an embedded Redis that cannot fork."""

    def __init__(self, settings: Settings, bot: BotIdentity) -> None:
        self.redis_url = str(settings.redis_url)
        self._run_turn = jobs.turn_runner(settings, bot)
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._main, name="turns", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _main(self) -> None:
        async def serve() -> None:
            redis = async_client(self.redis_url)
            try:
                name = f"{os.uname().nodename}.{os.getpid()}.simple"
                await TurnConsumer(redis, name, self._run_turn, slots=1, pid=os.getpid()).serve(self._stop)
            finally:
                await redis.aclose()

        self._loop.run_until_complete(serve())


def drain_turns(settings: Settings, bot: BotIdentity, slots: int = 1) -> int:
    """Run every queued turn (and those they queue) in this process, then return how many ran (`--burst`,
    and the tests' in-process worker). Each turn builds its own clients, on a loop made for this drain."""

    async def drain() -> int:
        redis = async_client(str(settings.redis_url))
        try:
            name = f"{os.uname().nodename}.{os.getpid()}.burst"
            run_turn = jobs.turn_runner(settings, bot)
            return await TurnConsumer(redis, name, run_turn, slots=slots, pid=os.getpid()).drain()
        finally:
            with contextlib.suppress(Exception):
                await redis.aclose()

    return asyncio.run(drain())
