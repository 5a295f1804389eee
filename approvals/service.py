"""The approval service: a sensitive call becomes a request people decide on; an approved request runs once;
whatever happens, people are told and what waited on it resumes (SPEC §6, §7, §10).

    request ──▶ vote | reject (clicks) ──▶ execute (approvals.execution) ──▶ settle (approvals.settlement)
        └──▶ expire (its job, a click, or approvals.sweep) ──────────────────────────▶ settle

- A click is judged from server-side state only. The clicker is a person, their linked `sub` (SPEC §5),
  with groups no older than 5 minutes; the Slack account only says where the click came from, and an
  Approve must come from one of the request's own cards. Whether that person is the requester, has already
  voted, or completes the quorum is decided inside one atomic transition (approvals.store), and every
  click, refusals included, is audited under the clicker's Slack account and `sub`.
- The service says what happened (`Click`, the ports' calls); the Slack edge says it in words.

Errors: redis.exceptions.RedisError before a decision is durable propagates (the clicker is told nothing
changed); after it, the click reports `followed_up=False` and the sweep catches up (ACCEPTANCE 37).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import RedisError

from approvals.approval import Approval, ApprovalStatus, VoteResult
from approvals.approvers import eligible_approvers
from approvals.audit import approval_record
from approvals.execution import ApprovalExecution
from approvals.leases import Leases
from approvals.policy import may_approve
from approvals.ports import ActionQueue, ApprovalNotices, AuditLog, Identities, ToolSessions
from approvals.reminders import ReminderSchedule
from approvals.settlement import Settlement
from approvals.store import ApprovalStore
from approvals.sweep import ApprovalSweep
from approvals.turns import Turn
from mcp_clients.gateway import Caller, ToolSpec
from mcp_clients.tokens import Identity, TokenUnavailable

__all__ = ["ApprovalService", "Click", "RejectBlock"]

log = logging.getLogger(__name__)

RejectBlock = Literal["unknown", "decided", "own_request"]


@dataclass(frozen=True)
class Click:
    """What an Approve or Reject click did.

    `approval` None: no such request (or, for Approve, not on that card). `vote` None with an approval: the
    clicker is not linked, so the store was not asked. `followed_up` False: the decision is durable but
    what follows it (the audit, running it, the redraw) failed for now; the sweep catches up."""

    approval: Approval | None
    vote: VoteResult | None = None
    followed_up: bool = True


class ApprovalService:
    def __init__(
        self,
        *,
        store: ApprovalStore,
        notices: ApprovalNotices,
        queue: ActionQueue,
        identities: Identities,
        tools: ToolSessions,
        audit: AuditLog,
        leases: Leases,
        ttl_seconds: float,
        lease_seconds: float,
        reminders: ReminderSchedule | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`reminders`: where the half-TTL reminder and the escalation are scheduled (None: no nudges)."""
        self.store = store
        self._notices = notices
        self._queue = queue
        self._identities = identities
        self._audit = audit
        self._ttl = ttl_seconds
        self._clock = clock
        self._settlement = Settlement(store, queue)
        self._reminders = reminders
        self._sweep = ApprovalSweep(
            store, notices, queue, audit, self._settlement, reminders=reminders, clock=clock
        )
        self._execution = ApprovalExecution(
            store, notices, tools, identities, audit, leases, self._settlement, lease_seconds=lease_seconds
        )

    # --- reading -------------------------------------------------------------------------------------

    async def get(self, approval_id: str) -> Approval | None:
        return await self.store.get(approval_id)

    async def for_turn(self, turn_id: str) -> list[Approval]:
        """A turn's approvals, oldest first (what a resumed turn reads its outcomes from)."""
        return await self.store.for_turn(turn_id)

    # --- requesting ----------------------------------------------------------------------------------

    async def request(
        self,
        *,
        turn: Turn,
        caller: Caller,
        spec: ToolSpec,
        arguments: dict[str, Any],
        reason: str,
        tool_use_id: str,
        read_before: tuple[str, ...] = (),
        source: str = "agent",
        workflow_run_id: str = "",
        step_id: str = "",
    ) -> Approval:
        """Record a request to run `spec` with `arguments` for `turn`, show it, and schedule its expiry."""
        now = self._clock()
        approval = await self.store.create(
            turn_id=turn.id,
            source=source,
            identity="service" if caller.service else "user",
            workflow_run_id=workflow_run_id,
            step_id=step_id,
            team=turn.team,
            channel=turn.channel,
            thread_ts=turn.thread_ts,
            requester=turn.user,
            requester_sub=caller.identity.sub,
            requester_email=caller.identity.email,
            server=spec.server,
            server_url=spec.url,
            resource=spec.resource,
            short_name=spec.short_name,
            owner_team=spec.owner_team,
            tool=spec.tool,
            model_name=spec.model_name,
            tool_use_id=tool_use_id,
            arguments=arguments,
            fingerprint=spec.fingerprint,
            reason=reason,
            read_before=", ".join(read_before),
            approver_groups=tuple(spec.approval.approver_groups),
            quorum=spec.approval.quorum,
            created_at=now,
            expires_at=now + self._ttl,
        )
        await self._notices.show_request(approval)
        await self._audit.record(approval_record(approval, "approval_requested", "pending"))
        self._queue.schedule_expiry(approval.id, approval.expires_at)
        if self._reminders is not None:
            await self._reminders.schedule(approval)
        await self._push(approval)
        return approval

    async def _push(self, approval: Approval) -> None:
        """The card to every linked person who may approve it (issue 18), or, when there is nobody, the
        thread told so at once instead of waiting for the expiry. Best effort, like every notice: the request
        stands with its thread card whatever happens here (the approver's queue on App Home lists it too)."""
        try:
            approvers = eligible_approvers(approval, await self._identities.linked(approval.team))
            await self._notices.show_to_approvers(approval, approvers)
            if not approvers:
                await self._notices.say_nobody_eligible(approval)
        except RedisError as exc:
            log.warning("approval %s: approvers not reached (%s)", approval.id, type(exc).__name__)

    # --- clicks --------------------------------------------------------------------------------------

    async def vote(self, approval_id: str, *, user: str, channel: str, message_ts: str) -> Click:
        """An Approve click by Slack account `user` on the card at (`channel`, `message_ts`)."""
        approval = await self.store.get(approval_id)
        if approval is None or not _card_matches(approval, channel, message_ts):
            return Click(None)
        identity = await self._clicker(approval, user, "approve")
        if identity is None:
            return Click(approval)
        eligible = may_approve(approval, identity.groups)
        result = await self.store.vote(
            approval_id, user=user, sub=identity.sub, email=identity.email, eligible=eligible
        )
        # From here the decision is durable: a Redis failure must not read as "nothing changed".
        try:
            await self._audit_click(
                result.approval, (user, identity.sub), "approve", _outcome(result), result.kind
            )
            if result.kind == "approved":  # run first, then redraw: a slow chat.update must not delay it
                self._queue.enqueue_action(approval_id)
            if result.kind in ("counted", "approved"):
                await self._notices.show_decision(approval_id)
        except RedisError as exc:
            # The sweeper re-enqueues an APPROVED record with no job (ACCEPTANCE 37).
            log.warning("approval %s recorded, follow-up failed (%s)", approval_id, type(exc).__name__)
            return Click(approval, result, followed_up=False)
        if result.kind == "expired":
            await self.on_expired(approval_id)
        return Click(approval, result)

    async def reject(self, approval_id: str, *, user: str, reason: str) -> Click:
        """A Reject with its reason (the submitted modal) by Slack account `user`."""
        approval = await self.store.get(approval_id)
        if approval is None:
            return Click(None)
        identity = await self._clicker(approval, user, "reject")
        if identity is None:
            return Click(approval)
        by = (user, identity.sub)
        result = await self.store.reject(
            approval_id,
            user=user,
            sub=identity.sub,
            eligible=may_approve(approval, identity.groups),
            reason=reason,
        )
        await self._audit_click(result.approval, by, "reject", _outcome(result), reason)
        if result.kind == "rejected":
            await self._notices.show_decision(approval_id)
            decision = approval_record(result.approval, "approval_decision", "rejected", detail=reason, by=by)
            await self._audit.record(decision)
            await self._settlement.settle(result.approval)
        elif result.kind == "expired":
            await self.on_expired(approval_id)
        return Click(approval, result)

    async def withdraw(self, approval_id: str, *, user: str) -> Click:
        """A Withdraw click by Slack account `user`: only the requester (any account of their `sub`) may take
        a request back, and only before a decision. Every card then shows it, and the turn resumes."""
        approval = await self.store.get(approval_id)
        if approval is None:
            return Click(None)
        identity = await self._identities.identity(approval.team, user)  # who they are; groups don't matter
        by = (user, identity.sub if identity is not None else "")
        result = await self.store.withdraw(approval_id, user=user, sub=by[1])
        outcome = {"withdrawn": "withdrawn", "expired": "expired"}.get(result.kind, "denied")
        await self._audit_click(result.approval, by, "withdraw", outcome, result.kind)
        if result.kind == "withdrawn":
            await self._notices.show_decision(approval_id)
            record = approval_record(result.approval, "approval_withdrawn", "withdrawn", by=by)
            await self._audit.record(record)
            await self._settlement.settle(result.approval)
        elif result.kind == "expired":
            await self.on_expired(approval_id)
        return Click(approval, result)

    async def may_reject(self, approval_id: str, *, user: str) -> RejectBlock | None:
        """Quick check before asking for a reason: why this person cannot reject, if they cannot. The
        transition decides again; this spares the requester (any of their Slack accounts) a pointless form."""
        approval = await self.store.get(approval_id)
        if approval is None:
            return "unknown"
        if approval.status != ApprovalStatus.PENDING:
            return "decided"
        if approval.requester == user:
            return "own_request"
        identity = await self._identities.identity(approval.team, user)
        if identity is not None and identity.sub == approval.requester_sub:
            return "own_request"
        return None

    # --- later work (jobs and the sweep) -------------------------------------------------------------

    async def execute(self, approval_id: str) -> str:
        """Run one approved action (approvals.execution); safe to call twice."""
        return await self._execution.execute(approval_id)

    async def expire(self, approval_id: str) -> bool:
        return await self._sweep.expire(approval_id)

    async def on_expired(self, approval_id: str) -> None:
        await self._sweep.on_expired(approval_id)

    async def sweep(self) -> dict[str, int]:
        return await self._sweep.sweep()

    async def requeue(self, now: float) -> int:
        return await self._sweep.requeue(now)

    async def settle(self, approval: Approval) -> None:
        await self._settlement.settle(approval)

    async def _clicker(self, approval: Approval, user: str, action: str) -> Identity | None:
        """Who clicked: the Slack account's person with groups no older than 5 minutes; None when the
        account is not linked (the click is audited as denied, and nothing else is asked)."""
        try:
            return await self._identities.current_identity(approval.team, user)
        except TokenUnavailable as exc:
            await self._audit_click(approval, (user, ""), action, "denied", f"not linked: {exc}")
            return None

    async def _audit_click(
        self, approval: Approval, by: tuple[str, str], action: str, outcome: str, detail: str
    ) -> None:
        decided = outcome in ("approved", "rejected")  # decision latency feeds a metric
        record = approval_record(
            approval,
            "approval_decision",
            outcome,
            # approvals.impact reads "{action} (" as a click.
            detail=f"{action} (requested by {approval.requester}): {detail}",
            latency_ms=(self._clock() - approval.created_at) * 1000 if decided else 0.0,
            by=by,
        )
        await self._audit.record(record)


def _card_matches(approval: Approval, channel: str, message_ts: str) -> bool:
    # A click must come from one of this approval's own cards, not from a copy pasted elsewhere.
    return any(c.channel == channel and c.ts == message_ts for c in approval.cards)


def _outcome(result: VoteResult) -> str:
    return {"approved": "approved", "counted": "pending", "rejected": "rejected", "expired": "expired"}.get(
        result.kind, "denied"
    )
