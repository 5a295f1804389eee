"""Approvals end to end: request, cards, clicks, exactly-once execution, resume (SPEC §6, §7, §10).

- A sensitive call becomes an approval record (approvals.store) and a card in the thread, mirrored to
  APPROVALS_CHANNEL when set. Buttons carry the approval id and nothing else.
- A click is judged from server-side state only: the clicker's linked identity and groups (re-read when older
  than 5 minutes), the record's status, expiry, requester and quorum, in one atomic transition.
- An approved action runs from the `actions` queue under the REQUESTER's identity, with the stored arguments,
  after re-checking their digest and the tool's fingerprint; APPROVED → RUNNING is atomic, so it runs once.
- Whatever happens (success, failure, rejection, expiry, a crash mid-call), every card is updated, the thread
  is told, it is audited, and the paused conversation resumes with the outcome. The outcome of a call to a
  `private_data` server goes to the requester alone; the cards and the thread say only that it was sent.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from agent.redaction import redact_secrets
from approvals.audit import AuditRecord, preview
from approvals.policy import progress_text, refusal_text
from approvals.store import Approval, ApprovalStore, Status, VoteResult
from approvals.turns import Turn
from bot.approval_notices import ApprovalNotices, mentions
from bot.queues import Queues
from bot.services import BotIdentity, Services
from bot.slack_text import Mrkdwn, code, ours
from mcp_clients.gateway import Caller, ToolSpec
from mcp_clients.tokens import TokenUnavailable

__all__ = ["ApprovalFlow", "approval_flow", "seal_key"]

log = logging.getLogger(__name__)

RECORDED_LATER = "Your approval is recorded. It will run as soon as my queue is reachable again."
ENQUEUE_GRACE_SECONDS = 30  # an APPROVED record older than this with no live job lost its enqueue
_DEAD_JOB = {JobStatus.FAILED, JobStatus.FINISHED, JobStatus.STOPPED, JobStatus.CANCELED}
TERMINAL = {Status.REJECTED, Status.EXPIRED, Status.SUCCEEDED, Status.FAILED, Status.OUTCOME_UNKNOWN}
LEASE_MARGIN_SECONDS = 60


def seal_key(services: Services) -> bytes:
    """The HMAC key that seals approval records, derived from the first CHATOPS_SECRET_KEY."""
    master = services.settings.chatops_secret_key[0].get_secret_value().encode()
    return hashlib.sha256(b"chatops-mcp/approval-seal/v1|" + master).digest()


def approval_flow(svc: Services, queues: Queues, bot: BotIdentity) -> ApprovalFlow:
    return ApprovalFlow(svc, queues, bot, ApprovalStore(svc.redis, seal_key=seal_key(svc)))


@dataclass
class ApprovalFlow:
    svc: Services
    queues: Queues
    bot: BotIdentity
    store: ApprovalStore

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
        now = time.time()
        approval = await self.store.create(
            turn_id=turn.id,
            source=source,
            workflow_run_id=workflow_run_id,
            step_id=step_id,
            team=turn.team,
            channel=turn.channel,
            thread_ts=turn.thread_ts,
            requester=turn.user,
            requester_sub=caller.identity.sub,
            requester_email=caller.identity.email,
            server=spec.server,
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
            expires_at=now + self.svc.settings.approval_ttl_seconds,
        )
        await self._post_cards(approval)
        await self.svc.audit.record(self._audit(approval, "approval_requested", "pending"))
        self.queues.schedule_expiry(approval.id, approval.expires_at)
        return approval

    @property
    def notices(self) -> ApprovalNotices:
        return ApprovalNotices(self.svc, self.store)

    async def _post_cards(self, approval: Approval) -> None:
        await self.notices.post_cards(approval)

    async def refresh_cards(self, approval_id: str) -> None:
        """Re-render every copy of the card from the record (idempotent; safe to retry)."""
        await self.notices.refresh_cards(approval_id)

    # --- clicks --------------------------------------------------------------------------------------

    async def vote(self, approval_id: str, *, user: str, channel: str, message_ts: str) -> str:
        """An Approve click. Returns the ephemeral text for the clicker (empty: nothing to say)."""
        approval = await self.store.get(approval_id)
        if approval is None or not _card_matches(approval, channel, message_ts):
            return "I can't find that request; it may have been made on another card."
        try:
            identity = await self.svc.broker.current_identity(approval.team, user)
        except TokenUnavailable as exc:
            await self._audit_attempt(approval, user, "", "approve", "denied", f"not linked: {exc}")
            url = await self.svc.linking.offer(approval.team, user)
            return f"{refusal_text(None, not_linked=True)} <{url}|Connect your account>"
        eligible = bool(set(approval.approver_groups) & identity.groups)
        result = await self.store.vote(
            approval_id, user=user, sub=identity.sub, email=identity.email, eligible=eligible
        )
        # From here the decision is durable: a Redis failure must not read as "nothing changed".
        try:
            await self._audit_attempt(
                result.approval, user, identity.sub, "approve", _outcome(result), result.kind
            )
            if result.kind == "approved":  # run first, then redraw: a slow chat.update must not delay it
                self.queues.enqueue_action(approval_id)
            if result.kind in ("counted", "approved"):
                await self.refresh_cards(approval_id)
        except RedisError as exc:
            # The sweeper re-enqueues an APPROVED record with no job (ACCEPTANCE 37).
            log.warning("approval %s recorded, follow-up failed (%s)", approval_id, type(exc).__name__)
            return RECORDED_LATER if result.kind == "approved" else ""
        if result.kind == "approved":
            return ""
        if result.kind == "counted":
            return f"Your approval is counted. {progress_text(result.approval)}"
        if result.kind == "expired":
            await self.on_expired(approval_id)
        return refusal_text(result)

    async def reject(self, approval_id: str, *, user: str, reason: str) -> str:
        approval = await self.store.get(approval_id)
        if approval is None:
            return "I can't find that request."
        try:
            identity = await self.svc.broker.current_identity(approval.team, user)
        except TokenUnavailable:
            return refusal_text(None, not_linked=True)
        eligible = bool(set(approval.approver_groups) & identity.groups)
        result = await self.store.reject(
            approval_id, user=user, sub=identity.sub, eligible=eligible, reason=reason
        )
        await self._audit_attempt(result.approval, user, identity.sub, "reject", _outcome(result), reason)
        if result.kind == "rejected":
            await self.refresh_cards(approval_id)
            await self.svc.audit.record(
                self._audit(result.approval, "approval_decision", "rejected", detail=reason)
            )
            await self._settled(result.approval)
            return ""
        if result.kind == "expired":
            await self.on_expired(approval_id)
        return refusal_text(result)

    async def may_reject(self, approval_id: str, *, user: str) -> str | None:
        """Quick check before opening the reason modal: why this person cannot reject, if they cannot."""
        approval = await self.store.get(approval_id)
        if approval is None:
            return "I can't find that request."
        if approval.status != Status.PENDING:
            return "This request has already been decided."
        if approval.requester == user:
            return "You asked for this; someone who may approve it has to decide."
        return None

    # --- execution (actions queue) -------------------------------------------------------------------

    async def execute(self, approval_id: str) -> str:
        lease = int(self.svc.gateway.call_timeout) + LEASE_MARGIN_SECONDS
        approval = await self.store.start(approval_id, lease_seconds=lease)
        if approval is None:
            return "not approved or already started"
        problem = await self.store.verify(approval)
        if problem is not None:
            return await self._finish(approval, Status.FAILED, f"refused to run: {problem}", alert=True)
        identity = await self.svc.broker.identity(approval.team, approval.requester)
        if identity is None:
            await self._tell_requester_to_reconnect(approval)
            return await self._finish(approval, Status.FAILED, "the requester's account link has ended")
        caller = Caller(approval.team, approval.requester, approval.channel, identity)
        async with self.svc.gateway.session(caller) as session:
            tools = {t.model_name: t for t in await session.tools(fresh=True)}
            spec = tools.get(approval.model_name)
            if spec is None and await self.svc.broker.identity(approval.team, approval.requester) is None:
                # Listing ended the link (refresh refused: invalid_grant): the requester must reconnect.
                # Never anyone else's token (ACCEPTANCE 30).
                await self._tell_requester_to_reconnect(approval)
                return await self._finish(approval, Status.FAILED, "the requester's account link has ended")
            poisoned = session.disabled.get(approval.model_name)
            if spec is None and poisoned is not None:
                detail = (
                    f"the tool's definition changed after approval and was withheld ({poisoned}); ask again"
                )
                return await self._finish(approval, Status.FAILED, detail, alert=True)
            if spec is None:
                return await self._finish(
                    approval, Status.FAILED, "the tool is no longer available to the requester"
                )
            if spec.fingerprint != approval.fingerprint:
                return await self._finish(
                    approval,
                    Status.FAILED,
                    "the tool's definition changed after approval; ask again",
                    alert=True,
                )
            outcome = await session.call(approval.model_name, approval.arguments, idempotency_key=approval.id)
        if outcome.error_kind == "auth":
            await self._tell_requester_to_reconnect(approval)
        status = (
            Status.SUCCEEDED
            if outcome.ok
            else Status.OUTCOME_UNKNOWN
            if outcome.error_kind == "timeout"
            else Status.FAILED
        )
        await self.svc.audit.record(
            self._audit(
                approval,
                "tool_call",
                status.value.lower(),
                detail=outcome.error_kind or "",
                latency_ms=outcome.latency_ms,
                minutes=spec.minutes_saved if outcome.ok else 0.0,
            )
        )
        return await self._finish(approval, status, outcome.text)

    async def _finish(self, approval: Approval, status: Status, detail: str, *, alert: bool = False) -> str:
        # Tool output can carry keys: redact before it is stored, drawn on the card or posted (ACCEPTANCE 23).
        detail = redact_secrets(detail)[0][:2000]
        await self.store.finish(approval.id, status, detail)
        await self.refresh_cards(approval.id)
        await self.notices.announce(approval, status, detail, alert=alert)
        if status != Status.SUCCEEDED:
            await self.svc.audit.record(
                self._audit(approval, "approval_outcome", status.value.lower(), detail=detail)
            )
        await self._settled(await self.store.get(approval.id) or approval)
        return status.value

    # --- expiry and crashes (sweeper) ----------------------------------------------------------------

    async def on_expired(self, approval_id: str) -> None:
        approval = await self.store.get(approval_id)
        if approval is None or approval.status != Status.EXPIRED:
            return
        if not await self.svc.redis.set(
            f"chatops:approval-expired-told:{approval_id}", "1", nx=True, ex=86400
        ):
            return
        await self.refresh_cards(approval_id)
        await self.svc.audit.record(self._audit(approval, "approval_expired", "expired"))
        await self._say(
            approval,
            ours(
                "The request to run {call} expired without a decision; nothing was run.",
                call=code(f"{approval.short_name}.{approval.tool}"),
            ),
            marker="expired",
        )
        await self._settled(approval)

    async def sweep(self) -> dict[str, int]:
        now = time.time()
        expired = 0
        for approval_id in await self.store.due_for_expiry(now):
            if await self.store.expire(approval_id, now):
                expired += 1
            await self.on_expired(approval_id)
        unknown = 0
        for approval_id in await self.store.stale_running(now):
            if await self.store.mark_unknown(approval_id, "the worker stopped during the call"):
                unknown += 1
                approval = await self.store.get(approval_id)
                if approval is not None:
                    await self.refresh_cards(approval_id)
                    await self.svc.audit.record(
                        self._audit(
                            approval, "tool_call", "outcome_unknown", detail="worker lost during the call"
                        )
                    )
                    await self._say(
                        approval,
                        ours(
                            ":rotating_light: {call} was running when its worker stopped. Its outcome is "
                            "unknown and it will not be re-run automatically; please check. {people}",
                            call=code(f"{approval.short_name}.{approval.tool}"),
                            people=mentions((approval.requester, *approval.decided_by)),
                        ),
                        marker="unknown",
                    )
                    await self._settled(approval)
        dirty = await self.svc.redis.spop("chatops:cards-dirty", 50)
        for raw in dirty or []:
            await self.refresh_cards(raw.decode() if isinstance(raw, bytes) else str(raw))
        requeued = await self._requeue_stranded(now)
        return {"expired": expired, "outcome_unknown": unknown, "requeued": requeued}

    async def _requeue_stranded(self, now: float) -> int:
        """Re-enqueue APPROVED records whose job never made it (Redis failed between decision and enqueue).

        Safe to repeat: the job id is the approval's, and only APPROVED → RUNNING proceeds, so however many
        sweeps or clicks enqueue it, it runs once."""
        requeued = 0
        for approval_id in await self.store.approved_before(now - ENQUEUE_GRACE_SECONDS):
            approval = await self.store.get(approval_id)
            if approval is None or approval.status != Status.APPROVED:
                await self.store.forget_approved(approval_id)
                continue
            job_id = f"exec-{approval_id}"
            try:
                job = Job.fetch(job_id, connection=self.queues.connection, serializer=JSONSerializer)
            except NoSuchJobError:
                job = None
            if job is not None:
                if job.get_status(refresh=False) not in _DEAD_JOB:
                    continue  # queued, scheduled or running: it will get there
                job.delete()  # died before it could start the run; replace it under the same id
            log.warning("approval %s was approved but had no job; enqueueing it again", approval_id)
            self.queues.enqueue_action(approval_id)
            requeued += 1
        return requeued

    # --- resuming the conversation -------------------------------------------------------------------

    async def _settled(self, approval: Approval) -> None:
        """When every approval of a paused turn has an outcome, resume that turn once."""
        siblings = await self.store.for_turn(approval.turn_id)
        if not siblings or any(a.status not in TERMINAL for a in siblings):
            return
        attempt = (
            "resume-" + hashlib.sha256(",".join(sorted(a.id for a in siblings)).encode()).hexdigest()[:12]
        )
        if approval.source == "workflow":
            self.queues.enqueue_workflow_resume(approval.workflow_run_id, approval.id)
        else:
            self.queues.enqueue_turn(approval.turn_id, attempt)

    # --- helpers -------------------------------------------------------------------------------------

    async def _say(self, approval: Approval, text: Mrkdwn, *, marker: str) -> None:
        await self.notices.say(approval, text, marker=marker)

    async def _tell_requester_to_reconnect(self, approval: Approval) -> None:
        await self.notices.tell_requester_to_reconnect(approval)

    def _audit(
        self,
        approval: Approval,
        kind: str,
        outcome: str,
        *,
        detail: str = "",
        latency_ms: float = 0.0,
        minutes: float = 0.0,
    ) -> AuditRecord:
        return AuditRecord(
            kind=kind,
            outcome=outcome,  # type: ignore[arg-type]
            request_id=approval.turn_id,
            approval_id=approval.id,
            workflow_run_id=approval.workflow_run_id,
            team=approval.team,
            channel=approval.channel,
            thread_ts=approval.thread_ts,
            user=approval.requester,
            sub=approval.requester_sub,
            server=approval.server,
            tool=approval.tool,
            args_sha256=approval.args_sha256,
            args_preview=preview(approval.arguments),
            approvers=tuple(approval.decided_by),
            latency_ms=latency_ms,
            minutes_saved=minutes,
            detail=detail,
        )

    async def _audit_attempt(
        self, approval: Approval, user: str, sub: str, action: str, outcome: str, detail: str
    ) -> None:
        record = self._audit(approval, "approval_decision", outcome, detail=f"{action}: {detail}")
        # A decision record is about the person who clicked; the requester stays in the request's records.
        decided = outcome in ("approved", "rejected")  # decision latency feeds a metric
        record = replace(
            record,
            user=user,
            sub=sub,
            detail=f"{action} (requested by {approval.requester}): {detail}",
            latency_ms=(time.time() - approval.created_at) * 1000 if decided else 0.0,
        )
        await self.svc.audit.record(record)


def _card_matches(approval: Approval, channel: str, message_ts: str) -> bool:
    # A click must come from one of this approval's own cards, not from a copy pasted elsewhere.
    return any(c.channel == channel and c.ts == message_ts for c in approval.cards)


def _outcome(result: VoteResult) -> str:
    return {"approved": "approved", "counted": "pending", "rejected": "rejected", "expired": "expired"}.get(
        result.kind, "denied"
    )
