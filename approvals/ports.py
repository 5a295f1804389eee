"""What the approval service needs from outside approvals/, each as the few methods it calls.

The Slack edge implements `ApprovalNotices` (bot.approval_notices), the job queues implement `ActionQueue`
(bot.queues.Queues), the token broker is `Identities` (mcp_clients.tokens.TokenBroker), the gateway is
`ToolSessions`, the audit trail is `AuditLog` (approvals.audit.Audit). A port says *what* happened or must
happen; how it looks in Slack, and how a job is queued, are the implementation's business.

Errors: a port backed by Redis raises redis.exceptions.RedisError when Redis cannot be reached; the service
treats that as "not done yet" (the sweep catches up), never as "nothing changed" once a decision is durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from approvals.approval import Approval, ApprovalStatus
from approvals.audit import AuditRecord
from mcp_clients.gateway import Caller, GatewaySession
from mcp_clients.tokens import Identity

__all__ = ["ActionQueue", "ApprovalNotices", "AuditLog", "Identities", "ToolSessions"]


class ApprovalNotices(Protocol):
    """What people are shown and told about an approval. Best effort: a notice that cannot be delivered is
    logged (or left for `redraw_stale` to retry); the record in the store stays the truth."""

    async def show_request(self, approval: Approval) -> None:
        """A new request: the cards that people decide on (their places recorded with the store)."""

    async def show_decision(self, approval_id: str) -> None:
        """Redraw every card of the request from its record (after a vote, a decision, a run, an expiry)."""

    async def redraw_stale(self) -> None:
        """Redraw the cards whose last redraw failed."""

    async def announce_outcome(
        self, approval: Approval, status: ApprovalStatus, detail: str, *, alert: bool, from_server: bool
    ) -> None:
        """How an approved run ended. `detail` is what the server answered (`from_server`), or the bot's own
        reason for not calling it; `alert`: something someone should look at (the tool or record changed)."""

    async def show_to_approvers(self, approval: Approval, approvers: Sequence[Identity]) -> None:
        """The card by DM to each of `approvers` (one per person, at most once per request), and to the
        server's or tool's `approvals_channel`; each copy is recorded as one of the request's cards."""

    async def say_nobody_eligible(self, approval: Approval) -> None:
        """Nobody linked may approve: the thread is told at once whom to ask (owner team, support channel)."""

    async def remind(self, approval: Approval) -> None:
        """Half the TTL has passed: the approvers' DM cards say so (updated in place, no new messages)."""

    async def escalate(self, approval: Approval) -> None:
        """Late and still pending: the card goes to the `escalation_channel`, if the registry names one."""

    async def say_expired(self, approval: Approval) -> None:
        """The request expired without a decision; nothing ran."""

    async def say_outcome_unknown(self, approval: Approval) -> None:
        """The run's worker stopped mid-call: nobody knows whether it happened, and it will not run again."""

    async def tell_requester_to_reconnect(self, approval: Approval) -> None:
        """The requester's account link has ended, so their approved request could not run."""


class ActionQueue(Protocol):
    """Work for later: approved actions, expiries, and resuming what waited on approvals."""

    def enqueue_action(self, approval_id: str) -> str:
        """Run an approved action (at most one job per approval: enqueueing again is harmless)."""

    def has_live_action(self, approval_id: str) -> bool:
        """Whether a job for the action is queued, scheduled or running."""

    def requeue_action(self, approval_id: str) -> None:
        """Enqueue the action again in place of a job that ended without starting the run."""

    def schedule_expiry(self, approval_id: str, at: float) -> None:
        """Expire the request at `at` (epoch seconds) unless it was decided by then."""

    def enqueue_turn(self, turn_id: str, attempt: str = "first") -> str:
        """Resume the paused turn (its approvals all have outcomes)."""

    def enqueue_workflow_resume(self, run_id: str, approval_id: str) -> None:
        """Continue the workflow run that waited on `approval_id`."""


class Identities(Protocol):
    """Who a Slack account stands for (its linked person, SPEC §5)."""

    async def identity(self, team: str, user: str) -> Identity | None:
        """The linked identity as last known, or None when the account is not linked."""

    async def current_identity(self, team: str, user: str) -> Identity:
        """The identity with groups no older than 5 minutes; raises mcp_clients.tokens.TokenUnavailable."""

    async def linked(self, team: str) -> list[Identity]:
        """Every linked identity of the team, groups as last known (whom a new request is pushed to)."""


class ToolSessions(Protocol):
    def session(self, caller: Caller) -> GatewaySession:
        """Tools and calls under `caller`'s identity (an async context manager)."""


class AuditLog(Protocol):
    async def record(self, record: AuditRecord) -> str: ...
