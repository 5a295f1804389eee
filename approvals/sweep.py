"""What the sweep does for approvals (every SWEEP_INTERVAL_SECONDS, one chain for the deployment; SPEC §10).

- Expire PENDING requests past their time (their own expiry job usually got there first), and tell people
  once, whoever notices first (the expiry job, a click, the sweep).
- A RUNNING action whose lease passed lost its worker mid-call: OUTCOME_UNKNOWN, people are told, and it is
  never run again on its own.
- Redraw cards whose last redraw failed.
- Re-enqueue APPROVED actions whose job never made it (Redis failed between the decision and the enqueue).
- Give the nudges that are due (approvals.reminders): each claimed by exactly one sweep, given if the
  request is still pending.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from approvals.approval import ApprovalStatus
from approvals.audit import approval_record
from approvals.ports import ActionQueue, ApprovalNotices, AuditLog
from approvals.reminders import ReminderSchedule
from approvals.settlement import Settlement
from approvals.store import ApprovalStore

__all__ = ["ENQUEUE_GRACE_SECONDS", "ApprovalSweep"]

log = logging.getLogger(__name__)

ENQUEUE_GRACE_SECONDS = 30  # an APPROVED record older than this with no live job lost its enqueue


class ApprovalSweep:
    def __init__(
        self,
        store: ApprovalStore,
        notices: ApprovalNotices,
        queue: ActionQueue,
        audit: AuditLog,
        settlement: Settlement,
        *,
        reminders: ReminderSchedule | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reminders = reminders
        self._store = store
        self._notices = notices
        self._queue = queue
        self._audit = audit
        self._settlement = settlement
        self._clock = clock

    async def sweep(self) -> dict[str, int]:
        now = self._clock()
        expired = 0
        for approval_id in await self._store.due_for_expiry(now):
            if await self._store.expire(approval_id, now):
                expired += 1
            await self.on_expired(approval_id)
        unknown = 0
        for approval_id in await self._store.stale_running(now):
            if await self._store.mark_unknown(approval_id, "the worker stopped during the call"):
                unknown += 1
                await self._lost(approval_id)
        await self._notices.redraw_stale()
        requeued = await self.requeue(now)
        nudged = await self.nudge(now)
        return {"expired": expired, "outcome_unknown": unknown, "requeued": requeued, "nudged": nudged}

    async def nudge(self, now: float) -> int:
        """Give the reminders and escalations due by `now` that this sweep claimed."""
        nudged = 0
        for what, approval_id in await self._reminders.due(now) if self._reminders is not None else []:
            approval = await self._store.get(approval_id)
            if approval is None or approval.status != ApprovalStatus.PENDING or now >= approval.expires_at:
                continue  # decided (or expired) meanwhile: nobody needs nudging
            if what == "remind":
                await self._notices.remind(approval)
            else:
                await self._notices.escalate(approval)
            nudged += 1
        return nudged

    async def expire(self, approval_id: str) -> bool:
        """The request's own expiry job: expire it unless it was decided, and tell people."""
        expired = await self._store.expire(approval_id)
        await self.on_expired(approval_id)
        return expired

    async def on_expired(self, approval_id: str) -> None:
        """People are told once that the request expired (whoever noticed it first calls this)."""
        approval = await self._store.get(approval_id)
        if approval is None or approval.status != ApprovalStatus.EXPIRED:
            return
        if not await self._store.first_notice(approval_id, "expired"):
            return
        await self._notices.show_decision(approval_id)
        await self._audit.record(approval_record(approval, "approval_expired", "expired"))
        await self._notices.say_expired(approval)
        await self._settlement.settle(approval)

    async def requeue(self, now: float) -> int:
        """Re-enqueue APPROVED records whose job never made it (Redis failed between decision and enqueue).

        Safe to repeat: the job id is the approval's, and only APPROVED → RUNNING proceeds, so however many
        sweeps or clicks enqueue it, it runs once."""
        requeued = 0
        for approval_id in await self._store.approved_before(now - ENQUEUE_GRACE_SECONDS):
            approval = await self._store.get(approval_id)
            if approval is None or approval.status != ApprovalStatus.APPROVED:
                await self._store.forget_approved(approval_id)
                continue
            if self._queue.has_live_action(approval_id):
                continue  # queued, scheduled or running: it will get there
            log.warning("approval %s was approved but had no job; enqueueing it again", approval_id)
            self._queue.requeue_action(approval_id)
            requeued += 1
        return requeued

    async def _lost(self, approval_id: str) -> None:
        approval = await self._store.get(approval_id)
        if approval is None:
            return
        await self._notices.show_decision(approval_id)
        record = approval_record(
            approval, "tool_call", "outcome_unknown", detail="worker lost during the call"
        )
        await self._audit.record(record)
        await self._notices.say_outcome_unknown(approval)
        await self._settlement.settle(approval)
