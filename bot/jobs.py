"""RQ job entry points (ids in, nothing else); the work itself is in the flows that bot.wiring builds.

A job finds the process's settings through RQ's public API: the workers run jobs of a `WiredJob` class
(RQ's `job_class` parameter) that carries them, and `get_current_job()` returns that job. Each job then
opens its own wiring on its own event loop (RQ gives each async job of a forking worker a fresh one).

Turns are not RQ jobs (bot.turn_pool, approvals.turn_queue): their consumer is handed a handler bound to
the settings it was built with (`turn_runner`, or `resident_turns` for the pool, whose one wiring stays open
and warm from one turn to the next). No module state.

This module imports the whole stack at the top on purpose: `chatops worker` imports it before forking, so
each work-horse starts with anthropic, mcp and slack_sdk already loaded (api-facts §4.3: ~10 ms per job
instead of ~1.5 s).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import ClassVar

from rq.job import Job, get_current_job

from bot.identity import BotIdentity
from bot.settings import Settings
from bot.wiring import Wiring, open_wiring  # also loads anthropic, agent and mcp before forking

__all__ = [
    "TurnHandler",
    "WiredJob",
    "execute_approved",
    "expire_approval",
    "resident_turns",
    "resume_workflow",
    "run_workflow",
    "sweep",
    "turn_runner",
    "wired_job_class",
]


class WiredJob(Job):
    """RQ's job as it is, plus the settings of the worker that runs it (nothing of RQ's is overridden)."""

    settings: ClassVar[Settings | None] = None
    bot: ClassVar[BotIdentity | None] = None


def wired_job_class(settings: Settings, bot: BotIdentity) -> type[WiredJob]:
    """The job class to hand a worker (`Worker(..., job_class=...)`) so its jobs know this process."""
    return type("WiredJob", (WiredJob,), {"settings": settings, "bot": bot})


TurnHandler = Callable[[str, str], Awaitable[str]]


def turn_runner(settings: Settings, bot: BotIdentity) -> TurnHandler:
    """The turn consumer's handler where turns are few (a drain, `--burst`, `--simple`'s thread, the tests):
    each turn opens its own wiring on the loop it runs on."""

    async def run_turn(turn_id: str, attempt: str = "first") -> str:
        async with open_wiring(settings, bot) as wiring:
            return await wiring.turn_flow().run(turn_id, attempt)

    return run_turn


@asynccontextmanager
async def resident_turns(settings: Settings, bot: BotIdentity) -> AsyncIterator[TurnHandler]:
    """The turn pool's handler: one wiring shared by every turn on the pool's loop, so connection pools to
    Redis, the model, Slack and the registry stay open and warm from one turn to the next."""
    async with open_wiring(settings, bot) as wiring:
        _ = wiring.model  # its client built now, not by the first turn

        async def run_turn(turn_id: str, attempt: str = "first") -> str:
            try:
                return await wiring.turn_flow().run(turn_id, attempt)
            finally:
                await wiring.metrics.flush()  # a finished turn's counters are in Redis, as a job's are

        yield run_turn


@asynccontextmanager
async def _wiring() -> AsyncIterator[Wiring]:
    """The wiring of this RQ job, opened on the job's own loop from the settings its job class carries."""
    job = get_current_job()
    if not (isinstance(job, WiredJob) and job.settings is not None and job.bot is not None):
        raise RuntimeError("run by a worker without wired_job_class(): this job does not know its settings")
    async with open_wiring(job.settings, job.bot) as wiring:
        yield wiring


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
