"""RQ job entry points (ids in, nothing else); the work itself is in the flows that bot.wiring builds.

A job finds the process's settings through RQ's public API: the workers run jobs of a `WiredJob` class
(RQ's `job_class` parameter) that carries them, and `get_current_job()` returns that job. Each job then
opens its own wiring on its own event loop (RQ gives each async job of a forking worker a fresh one).

The one exception is the turn consumer (bot.turn_pool, approvals.turn_queue): turns are not RQ jobs, so
there is no job to carry the settings. `configure()` (the worker entry, the tests' in-process worker) keeps
them in `_pool`, with the pool's resident wiring (`open_resident`: the clients stay open and warm on its
loop from one turn to the next): the one piece of module state left. The way out is for the consumer to
be handed a handler bound to a `Wiring` it opened itself (`wiring.turn_flow().run`).

This module imports the whole stack at the top on purpose: `chatops worker` imports it before forking, so
each work-horse starts with anthropic, mcp and slack_sdk already loaded (api-facts §4.3: ~10 ms per job
instead of ~1.5 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import ClassVar

from rq.job import Job, get_current_job

from bot.identity import BotIdentity
from bot.settings import Settings
from bot.wiring import Wiring, open_wiring  # also loads anthropic, agent and mcp before forking

__all__ = [
    "WiredJob",
    "close_resident",
    "configure",
    "execute_approved",
    "expire_approval",
    "open_resident",
    "resume_workflow",
    "run_turn",
    "run_workflow",
    "sweep",
    "wired_job_class",
]


class WiredJob(Job):
    """RQ's job as it is, plus the settings of the worker that runs it (nothing of RQ's is overridden)."""

    settings: ClassVar[Settings | None] = None
    bot: ClassVar[BotIdentity | None] = None


def wired_job_class(settings: Settings, bot: BotIdentity) -> type[WiredJob]:
    """The job class to hand a worker (`Worker(..., job_class=...)`) so its jobs know this process."""
    return type("WiredJob", (WiredJob,), {"settings": settings, "bot": bot})


@dataclass
class _TurnPool:
    settings: Settings
    bot: BotIdentity
    loop: asyncio.AbstractEventLoop | None = None
    wiring: Wiring | None = None
    stack: AsyncExitStack | None = None


_pool: _TurnPool | None = None  # see the module docstring: only the turn consumer's turns read it


def configure(settings: Settings, bot: BotIdentity) -> None:
    """The settings the turn consumer's turns run with: called by the worker entry (before it forks its turn
    pools, which inherit it) and by in-process test workers."""
    global _pool
    _pool = _TurnPool(settings, bot)


async def open_resident() -> None:
    """The turn pool's wiring, shared by every turn that runs on its loop: connection pools to Redis, the
    model, Slack and the registry stay open and warm from one turn to the next."""
    if _pool is None:
        raise RuntimeError("bot.jobs.configure() was not called in this worker")
    stack = AsyncExitStack()
    wiring = await stack.enter_async_context(open_wiring(_pool.settings, _pool.bot))
    _ = wiring.model  # its client built now, not by the first turn
    _pool.loop, _pool.wiring, _pool.stack = asyncio.get_running_loop(), wiring, stack


async def close_resident() -> None:
    if _pool is not None and _pool.stack is not None:
        stack, _pool.stack, _pool.wiring, _pool.loop = _pool.stack, None, None, None
        await stack.aclose()


@asynccontextmanager
async def _wiring() -> AsyncIterator[Wiring]:
    """The wiring of this job: the turn pool's when the job runs on its loop, else opened for the job."""
    pool = _pool
    if pool is not None and pool.wiring is not None and pool.loop is asyncio.get_running_loop():
        try:
            yield pool.wiring
        finally:
            await pool.wiring.metrics.flush()  # a finished job's counters are in Redis, as below
        return
    job = get_current_job()
    if isinstance(job, WiredJob) and job.settings is not None and job.bot is not None:
        settings, bot = job.settings, job.bot
    elif pool is not None:
        settings, bot = pool.settings, pool.bot
    else:
        raise RuntimeError("run by a worker without wired_job_class(): this job does not know its settings")
    async with open_wiring(settings, bot) as wiring:
        yield wiring


async def run_turn(turn_id: str, attempt: str = "first") -> str:
    """Answer one request. `attempt` separates re-runs that are legitimate (after linking, after waiting
    for the thread) from duplicates of the same delivery, which stop at the claim."""
    async with _wiring() as wiring:
        return await wiring.turn_flow().run(turn_id, attempt)


async def execute_approved(approval_id: str) -> str:
    """Run one approved action (actions queue). Safe to enqueue twice: only APPROVED → RUNNING proceeds."""
    async with _wiring() as wiring:
        return await wiring.approval_service().execute(approval_id)


async def expire_approval(approval_id: str) -> bool:
    async with _wiring() as wiring:
        return await wiring.approval_service().expire(approval_id)


async def sweep() -> dict[str, int]:
    """Expire overdue approvals, report actions and workflow runs whose worker died, re-render failed card
    updates, take over turns whose worker died; then schedule the next sweep (one chain for the whole
    deployment)."""
    async with _wiring() as wiring:
        try:
            now = time.time()
            counts = await wiring.approval_service().sweep()
            counts |= await wiring.recovery().sweep(now)
            return counts | {"workflows_lost": await wiring.workflow_flow().lost(now)}
        finally:
            wiring.next_sweep()


async def run_workflow(run_id: str) -> str:
    """Start (or continue) a workflow run (workflows queue)."""
    async with _wiring() as wiring:
        return await wiring.workflow_flow().execute(run_id)


async def resume_workflow(run_id: str, approval_id: str) -> str:
    """Continue a run after people decided on (and the worker ran) its waiting step."""
    async with _wiring() as wiring:
        return await wiring.workflow_flow().execute(run_id, approval_id=approval_id)
