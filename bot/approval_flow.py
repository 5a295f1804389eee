"""Approvals end to end: request, cards, clicks, exactly-once execution, resume (SPEC §6, §7, §10).

- A sensitive call becomes an approval record (approvals.store) and a card in the thread, mirrored to
  APPROVALS_CHANNEL when set. Buttons carry the approval id and nothing else.
- A click is judged from server-side state only: the clicker's linked identity and groups (re-read when older
  than 5 minutes), the record's status, expiry, requester and quorum, in one atomic transition.
- An approved action runs from the `actions` queue under the REQUESTER's identity (or the bot's service
  identity, for a step of an `identity: service` workflow: sealed into the record as `identity=service`), with
  the stored arguments, after re-checking their digest and the tool's fingerprint; APPROVED → RUNNING is
  atomic, so it runs once. Its lease is renewed while it runs (approvals.action_lease), and a registry that
  cannot be read before the call ends it FAILED (nothing ran), not "outcome unknown".
- Whatever happens (success, failure, rejection, expiry, a crash mid-call), every card is updated, the thread
  is told, it is audited, and the paused conversation resumes with the outcome. The outcome of a call to a
  `private_data` server goes to the requester alone; the cards and the thread say only that it was sent.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from agent.redaction import redact_secrets
from approvals.action_lease import ActionLeases
from approvals.audit import approval_record
from approvals.leases import held_lease
from approvals.store import Approval, ApprovalStore, Status
from approvals.turns import Turn
from bot import approval_clicks
from bot.approval_clicks import RECORDED_LATER
from bot.approval_notices import ApprovalNotices, mentions
from bot.bindings import SERVER_CHANGED, Unbound, bound_identity, server_problem
from bot.queues import Queues
from bot.services import BotIdentity, Services
from bot.slack_text import Mrkdwn, code, ours
from mcp_clients.gateway import Caller, ToolSpec
from mcp_clients.tokens import Identity
from registry_cache.snapshot import RegistryUnavailable

__all__ = ["RECORDED_LATER", "ApprovalFlow", "approval_flow", "seal_key", "seal_keys"]

log = logging.getLogger(__name__)

ENQUEUE_GRACE_SECONDS = 30  # an APPROVED record older than this with no live job lost its enqueue
_DEAD_JOB = {JobStatus.FAILED, JobStatus.FINISHED, JobStatus.STOPPED, JobStatus.CANCELED}
TERMINAL = {Status.REJECTED, Status.EXPIRED, Status.SUCCEEDED, Status.FAILED, Status.OUTCOME_UNKNOWN}
REGISTRY_DOWN = "the registry was unavailable; nothing ran"


def seal_keys(services: Services) -> list[bytes]:
    """The HMAC keys of approval records, one per CHATOPS_SECRET_KEY: the first seals, all verify."""
    masters = [k.get_secret_value().encode() for k in services.settings.chatops_secret_key]
    return [hashlib.sha256(b"chatops-mcp/approval-seal/v1|" + master).digest() for master in masters]


def seal_key(services: Services) -> bytes:
    """The key that seals new approval records (stores that only read need no other)."""
    return seal_keys(services)[0]


def approval_flow(svc: Services, queues: Queues, bot: BotIdentity) -> ApprovalFlow:
    first, *older = seal_keys(svc)
    return ApprovalFlow(svc, queues, bot, ApprovalStore(svc.redis, seal_key=first, older_seal_keys=older))


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
        """An Approve click; returns the ephemeral text for the clicker (bot.approval_clicks)."""
        return await approval_clicks.vote(
            self, approval_id, user=user, channel=channel, message_ts=message_ts
        )

    async def reject(self, approval_id: str, *, user: str, reason: str) -> str:
        return await approval_clicks.reject(self, approval_id, user=user, reason=reason)

    async def may_reject(self, approval_id: str, *, user: str) -> str | None:
        return await approval_clicks.may_reject(self, approval_id, user=user)

    # --- execution (actions queue) -------------------------------------------------------------------

    async def execute(self, approval_id: str) -> str:
        lease = float(self.svc.settings.turn_lease_seconds)
        approval = await self.store.start(approval_id, lease_seconds=lease)
        if approval is None:
            return "not approved or already started"
        # Renewed while this worker runs it: only a dead worker's action is reported as outcome unknown.
        async with held_lease(ActionLeases(self.svc.redis), approval.id, "", lease):
            try:
                return await self._execute(approval)
            except RegistryUnavailable:  # raised only before the call: the server was never asked
                return await self._finish(approval, Status.FAILED, REGISTRY_DOWN, from_server=False)

    async def _execute(self, approval: Approval) -> str:
        problem = await self.store.verify(approval)
        if problem is not None:
            return await self._finish(
                approval, Status.FAILED, f"refused to run: {problem}", alert=True, from_server=False
            )
        try:
            identity = await self._requester(approval)
        except Unbound as exc:
            return await self._finish(approval, Status.FAILED, str(exc), from_server=False)
        service = approval.identity == "service"  # sealed: verify() refused a record switched to service
        caller = Caller(approval.team, approval.requester, approval.channel, identity, service=service)
        async with self.svc.gateway.session(caller) as session:
            tools = {t.model_name: t for t in await session.tools(fresh=True)}
            spec = tools.get(approval.model_name)
            try:  # again: listing may have ended the link (invalid_grant), or it was relinked meanwhile
                await self._requester(approval)
            except Unbound as exc:
                return await self._finish(approval, Status.FAILED, str(exc), from_server=False)
            poisoned = session.disabled.get(approval.model_name)
            if spec is None and poisoned is not None:
                detail = (
                    f"the tool's definition changed after approval and was withheld ({poisoned}); ask again"
                )
                return await self._finish(approval, Status.FAILED, detail, alert=True, from_server=False)
            if spec is None:
                return await self._finish(
                    approval,
                    Status.FAILED,
                    "the tool is no longer available to the requester",
                    from_server=False,
                )
            if server_problem(approval, spec) is not None:
                return await self._finish(
                    approval, Status.FAILED, f"{SERVER_CHANGED}; ask again", alert=True, from_server=False
                )
            if spec.fingerprint != approval.fingerprint:
                return await self._finish(
                    approval,
                    Status.FAILED,
                    "the tool's definition changed after approval; ask again",
                    alert=True,
                    from_server=False,
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

    async def _finish(
        self,
        approval: Approval,
        status: Status,
        detail: str,
        *,
        alert: bool = False,
        from_server: bool = True,
    ) -> str:
        """`from_server=False`: the server was not called and `detail` is our own reason, which the thread
        sees even for a private server (there is nothing of the server's in it)."""
        # Tool output can carry keys: redact before it is stored, drawn on the card or posted (ACCEPTANCE 23).
        detail = redact_secrets(detail)[0][:2000]
        await self.store.finish(approval.id, status, detail, from_server=from_server)
        await self.refresh_cards(approval.id)
        await self.notices.announce(approval, status, detail, alert=alert, from_server=from_server)
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

    async def _requester(self, approval: Approval) -> Identity:
        """The requester's identity, while their Slack account is still linked to the person who asked (never
        anyone else's: ACCEPTANCE 30); raises `Unbound`, after asking them to connect again if it ended."""
        broker, sub = self.svc.broker, approval.requester_sub
        try:
            return await bound_identity(broker, approval.team, approval.requester, sub, role="requester")
        except Unbound as exc:
            if exc.ended:
                await self._tell_requester_to_reconnect(approval)
            raise

    async def _tell_requester_to_reconnect(self, approval: Approval) -> None:
        await self.notices.tell_requester_to_reconnect(approval)

    _audit = staticmethod(approval_record)
