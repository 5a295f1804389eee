"""A turn's tools in the audit: every call audited the moment it returns, every withheld tool reported.

A worker that dies mid-turn (SIGKILL, OOM) would otherwise leave the calls it had already made without an
audit record; the turn's recovery then re-runs them and audits only the second run. Wrapping the gateway
session gives each executed call exactly one terminal record, whatever happens to the turn afterwards.

A tool withheld from the model (a poisoned definition, or nobody may approve it) goes to the audit too, where
its owners' alerting reads, once a day per tool and reason however many turns meet it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from approvals.audit import Audit, turn_record
from approvals.turns import Turn
from mcp_clients.gateway import GatewaySession, ToolOutcome, ToolSpec
from mcp_clients.tokens import Identity

__all__ = ["AuditedTools", "Marks", "TurnAudit"]

WITHHELD_REPORT_SECONDS = 86_400


class Marks(Protocol):
    """Things done once a while (approvals.tallies.Tallies)."""

    async def first(self, name: str, seconds: int) -> bool: ...


class AuditedTools:
    """The `agent.ports.Tools` of one turn: the person's gateway session, with each call audited."""

    def __init__(self, session: GatewaySession, audit: Audit, turn: Turn, identity: Identity) -> None:
        self._session = session
        self._audit = audit
        self._turn = turn
        self._identity = identity

    async def tools(self) -> Sequence[ToolSpec]:
        return await self._session.tools()

    async def call(self, model_name: str, arguments: Mapping[str, Any]) -> ToolOutcome:
        started = time.monotonic()
        try:
            outcome = await self._session.call(model_name, arguments)
        except asyncio.CancelledError:  # the turn's time cap: the call was cut off, its effect unknown
            cut = ToolOutcome(False, "", latency_ms=(time.monotonic() - started) * 1000, error_kind="timeout")
            await asyncio.shield(self._record(model_name, arguments, cut))
            raise
        await self._record(model_name, arguments, outcome)
        return outcome

    async def _record(self, model_name: str, arguments: Mapping[str, Any], outcome: ToolOutcome) -> None:
        spec = self._session.spec(model_name)
        record = turn_record(
            self._turn,
            self._identity.sub,
            "tool_call",
            "succeeded" if outcome.ok else "failed",
            server=spec.server if spec is not None else "",
            tool=spec.tool if spec is not None else model_name,
            arguments=arguments,
            latency_ms=outcome.latency_ms,
            minutes=spec.minutes_saved if (spec is not None and outcome.ok) else 0.0,
            detail=outcome.error_kind or "",
        )
        await self._audit.record(record)


class TurnAudit:
    def __init__(self, audit: Audit, marks: Marks) -> None:
        self._audit = audit
        self._marks = marks

    def tools(self, session: GatewaySession, turn: Turn, identity: Identity) -> AuditedTools:
        return AuditedTools(session, self._audit, turn, identity)

    async def withheld(self, turn: Turn, identity: Identity, session: GatewaySession) -> None:
        for server, tool, reason in session.withheld.values():
            digest = hashlib.sha256(f"{server}|{tool}|{reason}".encode()).hexdigest()[:24]
            if not await self._marks.first(f"withheld:{digest}", WITHHELD_REPORT_SECONDS):
                continue
            detail = f"withheld from the model: {reason}"
            record = turn_record(
                turn, identity.sub, "tool_withheld", "denied", server=server, tool=tool, detail=detail
            )
            await self._audit.record(record)
