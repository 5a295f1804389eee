"""RQ job entry points (ids in, nothing else); the turn itself runs in bot.turn_runner.

This module imports the whole stack at the top on purpose: `chatops worker` imports it before forking, so
each work-horse starts with anthropic, mcp and slack_sdk already loaded (api-facts §4.3: ~10 ms per job
instead of ~1.5 s).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis import Redis

from bot.approval_flow import approval_flow
from bot.queues import Queues
from bot.recovery import TurnRecovery
from bot.services import BotIdentity, Services, open_services
from bot.settings import Settings
from bot.turn_runner import TurnRunner  # also the import that loads agent, mcp and anthropic before forking
from bot.workflow_flow import WorkflowCatalog, WorkflowFlow

__all__ = [
    "configure",
    "execute_approved",
    "expire_approval",
    "resume_workflow",
    "run_turn",
    "run_workflow",
    "sweep",
]

_config: tuple[Settings, BotIdentity] | None = None


def configure(settings: Settings, bot: BotIdentity) -> None:
    """Called once by the worker entry (before forking) and by in-process test workers."""
    global _config
    _config = (settings, bot)


def _configured() -> tuple[Settings, BotIdentity]:
    if _config is None:
        raise RuntimeError("bot.jobs.configure() was not called in this worker")
    return _config


@asynccontextmanager
async def _job() -> AsyncIterator[tuple[Services, Queues, BotIdentity]]:
    """What every job needs, built inside the job's own event loop (RQ gives each async job a fresh one)."""
    settings, bot = _configured()
    async with open_services(settings, bot.team) as svc:
        queues = Queues(Redis.from_url(str(settings.redis_url)))
        try:
            yield svc, queues, bot
        finally:
            queues.connection.close()


async def run_turn(turn_id: str, attempt: str = "first") -> str:
    """Answer one request. `attempt` separates re-runs that are legitimate (after linking, after waiting
    for the thread) from duplicates of the same delivery, which stop at the claim."""
    async with _job() as (svc, queues, bot):
        return await TurnRunner(svc, bot, queues).run(turn_id, attempt)


async def execute_approved(approval_id: str) -> str:
    """Run one approved action (actions queue). Safe to enqueue twice: only APPROVED → RUNNING proceeds."""
    async with _job() as (svc, queues, bot):
        return await approval_flow(svc, queues, bot).execute(approval_id)


async def expire_approval(approval_id: str) -> bool:
    async with _job() as (svc, queues, bot):
        flow = approval_flow(svc, queues, bot)
        expired = await flow.store.expire(approval_id)
        await flow.on_expired(approval_id)
        return expired


async def sweep() -> dict[str, int]:
    """Expire overdue approvals, report runs whose worker died, re-render failed card updates, take over
    turns whose worker died; then schedule the next sweep (one chain for the whole deployment)."""
    async with _job() as (svc, queues, bot):
        try:
            counts = await approval_flow(svc, queues, bot).sweep()
            return counts | await TurnRecovery(svc.store, svc.poster, queues).sweep(time.time())
        finally:
            queues.connection.delete("chatops:sweep-scheduled")
            queues.schedule_sweep()


_catalogs: dict[str, WorkflowCatalog] = {}


def workflow_flow(svc: Services, queues: Queues, bot: BotIdentity) -> WorkflowFlow:
    folder = svc.settings.workflows_dir
    catalog = _catalogs.setdefault(folder, WorkflowCatalog(folder))
    return WorkflowFlow(svc, queues, bot, catalog)


async def run_workflow(run_id: str) -> str:
    """Start (or continue) a workflow run (workflows queue)."""
    async with _job() as (svc, queues, bot):
        return await workflow_flow(svc, queues, bot).execute(run_id)


async def resume_workflow(run_id: str, approval_id: str) -> str:
    """Continue a run after people decided on (and the worker ran) its waiting step."""
    async with _job() as (svc, queues, bot):
        return await workflow_flow(svc, queues, bot).execute(run_id, approval_id=approval_id)
