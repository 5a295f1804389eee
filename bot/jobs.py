"""RQ job entry points (ids in, nothing else); the turn itself runs in flows.turn.

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

from agent.loop import Limits
from approvals.questions import QuestionStore
from approvals.tallies import Tallies
from bot.approval_wiring import approval_service
from bot.events import MAX_INPUT_CHARS
from bot.question_card import SlackQuestionCards
from bot.queues import Queues
from bot.redis_clients import sync_client
from bot.services import BotIdentity, Services, open_services  # also loads anthropic before forking
from bot.settings import Settings
from bot.turn_output import SlackTurnOutput
from bot.workflow_flow import WorkflowCatalog, WorkflowFlow
from flows.access import ToolAccess
from flows.admission import Admission
from flows.answer import TurnAnswer
from flows.recovery import TurnRecovery
from flows.server_questions import ServerQuestions
from flows.tool_audit import TurnAudit
from flows.turn import TurnFlow  # also the import that loads agent and mcp before forking

__all__ = [
    "close_resident",
    "configure",
    "execute_approved",
    "expire_approval",
    "open_resident",
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


@dataclass
class _Resident:
    loop: asyncio.AbstractEventLoop
    services: Services
    queues: Queues
    stack: AsyncExitStack


_resident: _Resident | None = None


async def open_resident() -> None:
    """Services shared by every job that runs on this loop (the turn pool's): connection pools to Redis,
    the model, Slack and the registry stay open and warm from one turn to the next."""
    global _resident
    settings, bot = _configured()
    stack = AsyncExitStack()
    svc = await stack.enter_async_context(open_services(settings, bot.team))
    queues = Queues(sync_client(str(settings.redis_url)))
    stack.callback(queues.connection.close)
    _ = svc.model  # its client built now, not by the first turn
    _resident = _Resident(asyncio.get_running_loop(), svc, queues, stack)


async def close_resident() -> None:
    global _resident
    resident, _resident = _resident, None
    if resident is not None:
        await resident.stack.aclose()


@asynccontextmanager
async def _job() -> AsyncIterator[tuple[Services, Queues, BotIdentity]]:
    """What every job needs: the resident services when the job runs on their loop (the turn pool), else
    built inside the job's own event loop (RQ gives each async job of a forking worker a fresh one)."""
    settings, bot = _configured()
    resident = _resident
    if resident is not None and resident.loop is asyncio.get_running_loop():
        try:
            yield resident.services, resident.queues, bot
        finally:
            await resident.services.metrics.flush()  # a finished job's counters are in Redis, as below
        return
    async with open_services(settings, bot.team) as svc:
        queues = Queues(sync_client(str(settings.redis_url)))
        try:
            yield svc, queues, bot
        finally:
            queues.connection.close()


def turn_flow(svc: Services, queues: Queues, bot: BotIdentity) -> TurnFlow:
    settings, approvals, tallies = svc.settings, approval_service(svc, queues), Tallies(svc.redis)
    answer = TurnAnswer(
        svc.store,
        SlackTurnOutput(svc.poster, svc.redis),
        ToolAccess(svc.broker, svc.linking, svc.gateway, svc.server_linking),
        approvals,
        approvals,
        model=svc.model,
        admission=Admission(tallies, per_minute=settings.user_turns_per_minute, max_chars=MAX_INPUT_CHARS),
        audit=TurnAudit(svc.audit, tallies),
        bill=svc.usage_book,
        questions=ServerQuestions(
            QuestionStore(svc.redis),
            SlackQuestionCards(svc.poster),
            timeout=float(settings.elicitation_timeout_seconds),
        ),
        limits=Limits(
            max_steps=settings.max_steps,
            max_seconds=float(settings.max_turn_seconds),
            max_output_tokens=settings.max_output_tokens,
            tool_output_max_chars=settings.tool_output_max_chars,
            budget_tokens=settings.context_budget_tokens,
            tool_search=settings.tool_search,
            tool_search_threshold=settings.tool_search_threshold,
        ),
    )
    return TurnFlow(svc.store, answer, queues, svc.metrics, lease_seconds=float(settings.turn_lease_seconds))


async def run_turn(turn_id: str, attempt: str = "first") -> str:
    """Answer one request. `attempt` separates re-runs that are legitimate (after linking, after waiting
    for the thread) from duplicates of the same delivery, which stop at the claim."""
    async with _job() as (svc, queues, bot):
        return await turn_flow(svc, queues, bot).run(turn_id, attempt)


async def execute_approved(approval_id: str) -> str:
    """Run one approved action (actions queue). Safe to enqueue twice: only APPROVED → RUNNING proceeds."""
    async with _job() as (svc, queues, _):
        return await approval_service(svc, queues).execute(approval_id)


async def expire_approval(approval_id: str) -> bool:
    async with _job() as (svc, queues, _):
        return await approval_service(svc, queues).expire(approval_id)


async def sweep() -> dict[str, int]:
    """Expire overdue approvals, report actions and workflow runs whose worker died, re-render failed card
    updates, take over turns whose worker died; then schedule the next sweep (one chain for the whole
    deployment)."""
    async with _job() as (svc, queues, bot):
        try:
            now = time.time()
            counts = await approval_service(svc, queues).sweep()
            counts |= await TurnRecovery(svc.store, SlackTurnOutput(svc.poster, svc.redis), queues).sweep(now)
            return counts | {"workflows_lost": await workflow_flow(svc, queues, bot).lost(now)}
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
