"""Every tool call of a turn is audited the moment it returns, not when the turn ends.

A worker that dies mid-turn (SIGKILL, OOM) would otherwise leave the calls it had already made without an
audit record; the turn's recovery then re-runs them and audits only the second run. Wrapping the gateway
session gives each executed call exactly one terminal record, whatever happens to the turn afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from approvals.audit import Audit, AuditRecord, args_digest, preview
from approvals.turns import Turn
from mcp_clients.gateway import GatewaySession, ToolOutcome, ToolSpec
from mcp_clients.tokens import Identity

__all__ = ["AuditedTools"]


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
        turn = self._turn
        await self._audit.record(
            AuditRecord(
                kind="tool_call",
                outcome="succeeded" if outcome.ok else "failed",
                request_id=turn.id,
                team=turn.team,
                channel=turn.channel,
                thread_ts=turn.thread_ts,
                user=turn.user,
                sub=self._identity.sub,
                server=spec.server if spec is not None else "",
                tool=spec.tool if spec is not None else model_name,
                args_sha256=args_digest(arguments),
                args_preview=preview(arguments),
                latency_ms=outcome.latency_ms,
                minutes_saved=spec.minutes_saved if (spec is not None and outcome.ok) else 0.0,
                detail=outcome.error_kind or "",
            )
        )
