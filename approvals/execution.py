"""Running an approved action, once (SPEC §6 "Execution is bound", §10).

- APPROVED → RUNNING is one atomic transition (approvals.store), so however many jobs reach a record, one
  runs it. Its lease is renewed while this worker runs it (approvals.action_lease): only a dead worker's
  action is reported as outcome unknown.
- It runs under the REQUESTER's identity (or the bot's service identity, for a step of an
  `identity: service` workflow: sealed into the record as `identity=service`) while their Slack account is
  still linked to the person who asked, with the stored arguments, after re-checking the record's seal, the
  server (name, URL, resource) and the tool's fingerprint against a fresh listing. Any difference ends it
  FAILED with nothing called; so does a registry that cannot be read before the call.
- It starts only once a Redis replica holds the RUNNING state (approvals.replication, REDIS_MIN_REPLICAS):
  otherwise it ends FAILED with nothing called, rather than risk a failover bringing it back to run twice.
- Whatever happens, the record gets its outcome, the cards are redrawn, the thread is told, it is audited,
  and whatever waited on it resumes (approvals.settlement).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.redaction import redact_secrets
from approvals.approval import Approval, ApprovalStatus
from approvals.audit import approval_record
from approvals.bindings import SERVER_CHANGED, Unbound, bound_identity, server_problem
from approvals.leases import Leases, held_lease
from approvals.ports import ApprovalNotices, AuditLog, Identities, ToolSessions
from approvals.replication import StartNotReplicated
from approvals.settlement import Settlement
from approvals.store import ApprovalStore
from mcp_clients.gateway import CALL_MADE_EFFECT_UNKNOWN, Caller, GatewaySession, ToolSpec
from mcp_clients.tokens import Identity
from registry_cache.snapshot import RegistryUnavailable

__all__ = ["NOT_REPLICATED", "REGISTRY_DOWN", "ApprovalExecution"]

REGISTRY_DOWN = "the registry was unavailable; nothing ran"
NOT_REPLICATED = (
    "Redis could not confirm that a replica recorded the start in time, so it was not run "
    "(a failover could otherwise have run it twice); nothing ran, ask again"
)
OUTCOME_CHARS = 2000  # of what the server answered, kept on the record (the card and the thread show less)
Status = ApprovalStatus


@dataclass(frozen=True)
class Refused:
    """Why an approved call was not made (our own words: nothing of the server's is in it)."""

    detail: str
    alert: bool  # the tool or the record changed since approval: someone should look


class ApprovalExecution:
    def __init__(
        self,
        store: ApprovalStore,
        notices: ApprovalNotices,
        tools: ToolSessions,
        identities: Identities,
        audit: AuditLog,
        leases: Leases,
        settlement: Settlement,
        *,
        lease_seconds: float,
    ) -> None:
        self._store = store
        self._notices = notices
        self._tools = tools
        self._identities = identities
        self._audit = audit
        self._leases = leases
        self._settlement = settlement
        self._lease_seconds = lease_seconds

    async def execute(self, approval_id: str) -> str:
        """Run one approved action; the status it ended in, or why nothing was done."""
        lease = self._lease_seconds
        try:
            approval = await self._store.start(approval_id, lease_seconds=lease)
        except StartNotReplicated as exc:
            # RUNNING on the primary only: a failover now could bring it back APPROVED, and it would run
            # again. Not running it at all is the safe side; the person is told and can ask again.
            return await self._refuse(exc.approval, Refused(NOT_REPLICATED, alert=False))
        if approval is None:
            return "not approved or already started"
        async with held_lease(self._leases, approval.id, "", lease):
            try:
                return await self._execute(approval)
            except RegistryUnavailable:  # raised only before the call: the server was never asked
                return await self._refuse(approval, Refused(REGISTRY_DOWN, alert=False))

    async def _execute(self, approval: Approval) -> str:
        problem = await self._store.verify(approval)
        if problem is not None:
            return await self._refuse(approval, Refused(f"refused to run: {problem}", alert=True))
        try:
            identity = await self._requester(approval)
        except Unbound as exc:
            return await self._refuse(approval, Refused(str(exc), alert=False))
        service = approval.identity == "service"  # sealed: verify() refused a record switched to service
        caller = Caller(approval.team, approval.requester, approval.channel, identity, service=service)
        async with self._tools.session(caller) as session:
            spec = await self._live_spec(approval, session)
            if isinstance(spec, Refused):
                return await self._refuse(approval, spec)
            outcome = await session.call(approval.model_name, approval.arguments, idempotency_key=approval.id)
        if outcome.error_kind == "auth":
            await self._notices.tell_requester_to_reconnect(approval)
        status = (
            Status.SUCCEEDED
            if outcome.ok
            else Status.OUTCOME_UNKNOWN
            if outcome.error_kind in CALL_MADE_EFFECT_UNKNOWN
            else Status.FAILED
        )
        record = approval_record(
            approval,
            "tool_call",
            status.value.lower(),
            detail=outcome.error_kind or "",
            latency_ms=outcome.latency_ms,
            minutes=spec.minutes_saved if outcome.ok else 0.0,
        )
        await self._audit.record(record)
        return await self._finish(approval, status, outcome.text)

    async def _live_spec(self, approval: Approval, session: GatewaySession) -> ToolSpec | Refused:
        """The tool as its server lists it now, if it is still the one approved; else why not."""
        tools = {t.model_name: t for t in await session.tools(fresh=True)}
        spec = tools.get(approval.model_name)
        try:  # again: listing may have ended the link (invalid_grant), or it was relinked meanwhile
            await self._requester(approval)
        except Unbound as exc:
            return Refused(str(exc), alert=False)
        poisoned = session.disabled.get(approval.model_name)
        if spec is None and poisoned is not None:
            detail = f"the tool's definition changed after approval and was withheld ({poisoned}); ask again"
            return Refused(detail, alert=True)
        if spec is None:
            return Refused("the tool is no longer available to the requester", alert=False)
        if server_problem(approval, spec) is not None:
            return Refused(f"{SERVER_CHANGED}; ask again", alert=True)
        if spec.fingerprint != approval.fingerprint:
            return Refused("the tool's definition changed after approval; ask again", alert=True)
        return spec

    async def _refuse(self, approval: Approval, refused: Refused) -> str:
        # The server was not called: the thread sees our reason even for a private server.
        return await self._finish(
            approval, Status.FAILED, refused.detail, alert=refused.alert, from_server=False
        )

    async def _finish(
        self,
        approval: Approval,
        status: Status,
        detail: str,
        *,
        alert: bool = False,
        from_server: bool = True,
    ) -> str:
        # Tool output can carry keys: redact before it is stored, drawn on the card or posted (ACCEPTANCE 23).
        detail = redact_secrets(detail)[0][:OUTCOME_CHARS]
        await self._store.finish(approval.id, status, detail, from_server=from_server)
        await self._notices.show_decision(approval.id)
        await self._notices.announce_outcome(approval, status, detail, alert=alert, from_server=from_server)
        if status != Status.SUCCEEDED:
            await self._audit.record(
                approval_record(approval, "approval_outcome", status.value.lower(), detail=detail)
            )
        await self._settlement.settle(await self._store.get(approval.id) or approval)
        return status.value

    async def _requester(self, approval: Approval) -> Identity:
        """The requester's identity, while their Slack account is still linked to the person who asked (never
        anyone else's: ACCEPTANCE 30); raises `Unbound`, after asking them to connect again if it ended."""
        try:
            return await bound_identity(
                self._identities, approval.team, approval.requester, approval.requester_sub, role="requester"
            )
        except Unbound as exc:
            if exc.ended:
                await self._notices.tell_requester_to_reconnect(approval)
            raise
