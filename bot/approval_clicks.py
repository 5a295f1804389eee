"""Clicks on an approval card (SPEC §6 "Who may approve", §7): Approve, Reject and the check before the
reason modal, each judged from server-side state only.

The clicker is a person, their linked `sub` (SPEC §5), with groups no older than 5 minutes; the Slack account
only says where the click came from. Whether that person is the requester, has already voted, or completes
the quorum is decided inside one atomic transition (approvals.store), and every click, refusals included,
is audited under the clicker's Slack account and `sub`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from approvals.approval import Approval, Status, VoteResult
from approvals.policy import progress_text, refusal_text
from mcp_clients.tokens import TokenUnavailable

if TYPE_CHECKING:
    from bot.approval_flow import ApprovalFlow

__all__ = ["RECORDED_LATER", "may_reject", "reject", "vote"]

log = logging.getLogger(__name__)

RECORDED_LATER = "Your approval is recorded. It will run as soon as my queue is reachable again."
OWN_REQUEST = "You asked for this; someone who may approve it has to decide."


async def vote(flow: ApprovalFlow, approval_id: str, *, user: str, channel: str, message_ts: str) -> str:
    """An Approve click. Returns the ephemeral text for the clicker (empty: nothing to say)."""
    approval = await flow.store.get(approval_id)
    if approval is None or not _card_matches(approval, channel, message_ts):
        return "I can't find that request; it may have been made on another card."
    try:
        identity = await flow.svc.broker.current_identity(approval.team, user)
    except TokenUnavailable as exc:
        await _audit_attempt(flow, approval, user, "", "approve", "denied", f"not linked: {exc}")
        url = await flow.svc.linking.offer(approval.team, user)
        return f"{refusal_text(None, not_linked=True)} <{url}|Connect your account>"
    eligible = bool(set(approval.approver_groups) & identity.groups)
    result = await flow.store.vote(
        approval_id, user=user, sub=identity.sub, email=identity.email, eligible=eligible
    )
    # From here the decision is durable: a Redis failure must not read as "nothing changed".
    try:
        await _audit_attempt(
            flow, result.approval, user, identity.sub, "approve", _outcome(result), result.kind
        )
        if result.kind == "approved":  # run first, then redraw: a slow chat.update must not delay it
            flow.queues.enqueue_action(approval_id)
        if result.kind in ("counted", "approved"):
            await flow.refresh_cards(approval_id)
    except RedisError as exc:
        # The sweeper re-enqueues an APPROVED record with no job (ACCEPTANCE 37).
        log.warning("approval %s recorded, follow-up failed (%s)", approval_id, type(exc).__name__)
        return RECORDED_LATER if result.kind == "approved" else ""
    if result.kind == "approved":
        return ""
    if result.kind == "counted":
        return f"Your approval is counted. {progress_text(result.approval)}"
    if result.kind == "expired":
        await flow.on_expired(approval_id)
    return refusal_text(result)


async def reject(flow: ApprovalFlow, approval_id: str, *, user: str, reason: str) -> str:
    """A submitted reason modal. Returns the ephemeral text for the clicker (empty: nothing to say)."""
    approval = await flow.store.get(approval_id)
    if approval is None:
        return "I can't find that request."
    try:
        identity = await flow.svc.broker.current_identity(approval.team, user)
    except TokenUnavailable as exc:
        await _audit_attempt(flow, approval, user, "", "reject", "denied", f"not linked: {exc}")
        return refusal_text(None, not_linked=True)
    eligible = bool(set(approval.approver_groups) & identity.groups)
    result = await flow.store.reject(
        approval_id, user=user, sub=identity.sub, eligible=eligible, reason=reason
    )
    await _audit_attempt(flow, result.approval, user, identity.sub, "reject", _outcome(result), reason)
    if result.kind == "rejected":
        await flow.refresh_cards(approval_id)
        decision = flow._audit(result.approval, "approval_decision", "rejected", detail=reason)
        await flow.svc.audit.record(replace(decision, user=user, sub=identity.sub))  # who decided
        await flow._settled(result.approval)
        return ""
    if result.kind == "expired":
        await flow.on_expired(approval_id)
    return refusal_text(result)


async def may_reject(flow: ApprovalFlow, approval_id: str, *, user: str) -> str | None:
    """Quick check before opening the reason modal: why this person cannot reject, if they cannot. The
    transition decides again; this spares the requester (any of their Slack accounts) a pointless form."""
    approval = await flow.store.get(approval_id)
    if approval is None:
        return "I can't find that request."
    if approval.status != Status.PENDING:
        return "This request has already been decided."
    if approval.requester == user:
        return OWN_REQUEST
    identity = await flow.svc.broker.identity(approval.team, user)
    if identity is not None and identity.sub == approval.requester_sub:
        return OWN_REQUEST
    return None


async def _audit_attempt(
    flow: ApprovalFlow, approval: Approval, user: str, sub: str, action: str, outcome: str, detail: str
) -> None:
    record = flow._audit(approval, "approval_decision", outcome, detail=f"{action}: {detail}")
    # A decision record is about the person who clicked; the requester stays in the request's records.
    decided = outcome in ("approved", "rejected")  # decision latency feeds a metric
    record = replace(
        record,
        user=user,
        sub=sub,
        detail=f"{action} (requested by {approval.requester}): {detail}",
        latency_ms=(time.time() - approval.created_at) * 1000 if decided else 0.0,
    )
    await flow.svc.audit.record(record)


def _card_matches(approval: Approval, channel: str, message_ts: str) -> bool:
    # A click must come from one of this approval's own cards, not from a copy pasted elsewhere.
    return any(c.channel == channel and c.ts == message_ts for c in approval.cards)


def _outcome(result: VoteResult) -> str:
    return {"approved": "approved", "counted": "pending", "rejected": "rejected", "expired": "expired"}.get(
        result.kind, "denied"
    )
