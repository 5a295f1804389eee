"""The audit trail (SPEC §9): every tool call, approval request, decision, expiry, workflow run and account
link, appended to the Redis stream `chatops:audit` and logged as one JSON line.

Records carry a sha256 of the canonical arguments and a redacted, shortened preview, never the arguments
themselves: approvers see full arguments on the card; the audit keeps proof of what ran without keeping
secrets that a tool's arguments may contain.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from agent.redaction import redact_secrets
from agent.transcript import canonical_json
from approvals.store import Approval, args_sha256
from approvals.turns import Turn
from approvals.workflow_runs import WorkflowRun

__all__ = [
    "AUDIT_STREAM",
    "Audit",
    "AuditRecord",
    "approval_record",
    "args_digest",
    "link_record",
    "preview",
    "run_record",
    "turn_record",
]

AUDIT_STREAM = "chatops:audit"
PREVIEW_CHARS = 300

log = logging.getLogger("chatops.audit")

Outcome = Literal[
    "succeeded",
    "failed",
    "denied",
    "rejected",
    "expired",
    "withdrawn",
    "stopped",
    "outcome_unknown",
    "pending",
    "approved",
    "",
]


def args_digest(arguments: Mapping[str, Any]) -> str:
    # The same digest the approval record carries, so an audit line and its approval can be matched.
    return args_sha256(arguments)


def preview(arguments: Mapping[str, Any]) -> str:
    text, _ = redact_secrets(canonical_json(dict(arguments), lenient=True))
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


@dataclass(frozen=True)
class AuditRecord:
    # tool_call | approval_requested | approval_decision | approval_expired | workflow_run | account_link |
    # turn_stop ...
    kind: str
    outcome: Outcome = ""
    request_id: str = ""
    approval_id: str = ""
    workflow_run_id: str = ""
    team: str = ""
    channel: str = ""
    thread_ts: str = ""
    user: str = ""
    sub: str = ""
    server: str = ""
    tool: str = ""
    args_sha256: str = ""
    args_preview: str = ""
    approvers: Sequence[str] = field(default_factory=tuple)
    latency_ms: float = 0.0
    minutes_saved: float = 0.0
    detail: str = ""
    permalink: str = ""
    time: float = 0.0
    usage: Mapping[str, int] = field(default_factory=dict)  # model_usage: tokens as billed (agent.usage)
    cost_usd: float = 0.0  # model_usage: the estimate from the price table in settings

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["approvers"] = list(self.approvers)
        data["usage"] = dict(self.usage)
        return data


def approval_record(
    approval: Approval,
    kind: str,
    outcome: str,
    *,
    detail: str = "",
    latency_ms: float = 0.0,
    minutes: float = 0.0,
    by: tuple[str, str] | None = None,
) -> AuditRecord:
    """A record about `approval` (request, decision, click, expiry, run, outcome). It is in the requester's
    name, except a click's or a decision's: `by` (the clicker's Slack account and `sub`) is who acted."""
    if approval.identity == "service":  # `sub` stays the requester's: the person who answers for it
        detail = f"{detail} (runs as the service identity)".strip()
    user, sub = by if by is not None else (approval.requester, approval.requester_sub)
    return AuditRecord(
        kind=kind,
        outcome=outcome,  # type: ignore[arg-type]
        request_id=approval.turn_id,
        approval_id=approval.id,
        workflow_run_id=approval.workflow_run_id,
        team=approval.team,
        channel=approval.channel,
        thread_ts=approval.thread_ts,
        user=user,
        sub=sub,
        server=approval.server,
        tool=approval.tool,
        args_sha256=approval.args_sha256,
        args_preview=preview(approval.arguments),
        approvers=approval.approver_subs,  # persons, as everywhere in the audit (SPEC §5)
        latency_ms=latency_ms,
        minutes_saved=minutes,
        detail=detail,
    )


def turn_record(
    turn: Turn,
    sub: str,
    kind: str,
    outcome: Outcome,
    *,
    server: str = "",
    tool: str = "",
    arguments: Mapping[str, Any] | None = None,
    latency_ms: float = 0.0,
    minutes: float = 0.0,
    detail: str = "",
    user: str = "",
) -> AuditRecord:
    """A record about something an agent turn did, in its requester's name (`sub`: the person); or about
    what someone did to it (a Stop click), in the name of `user`, that Slack account, and `sub` theirs."""
    return AuditRecord(
        kind=kind,
        outcome=outcome,
        request_id=turn.id,
        team=turn.team,
        channel=turn.channel,
        thread_ts=turn.thread_ts,
        user=user or turn.user,
        sub=sub,
        server=server,
        tool=tool,
        args_sha256=args_digest(arguments) if arguments is not None else "",
        args_preview=preview(arguments) if arguments is not None else "",
        latency_ms=latency_ms,
        minutes_saved=minutes,
        detail=detail,
    )


def link_record(
    kind: Literal["account_link", "account_unlink", "server_connect", "server_disconnect"],
    outcome: Outcome,
    *,
    team: str,
    user: str,
    sub: str = "",
    server: str = "",
    detail: str = "",
) -> AuditRecord:
    """A record about a person's account link, or their connection to one `server` of its own
    authorization server: made, refused (`denied`, `detail` the reason) or undone."""
    return AuditRecord(
        kind=kind, outcome=outcome, team=team, user=user, sub=sub, server=server, detail=detail
    )


def run_record(
    run: WorkflowRun,
    kind: Literal["workflow_run", "tool_call"],
    outcome: Outcome,
    *,
    tool: str,
    arguments: Mapping[str, Any],
    sub: str = "",
    server: str = "",
    latency_ms: float = 0.0,
    minutes: float = 0.0,
    detail: str = "",
) -> AuditRecord:
    """A record about a workflow run (`workflow_run`, `tool` the workflow) or one of its steps (`tool_call`),
    in the name of the person who started it."""
    return AuditRecord(
        kind=kind,
        outcome=outcome,
        workflow_run_id=run.id,
        team=run.team,
        channel=run.channel,
        thread_ts=(run.message_ts or "") if kind == "workflow_run" else "",  # a step is not in the thread
        user=run.user,
        sub=sub,
        server=server,
        tool=tool,
        args_sha256=args_digest(arguments),
        args_preview=preview(arguments),
        latency_ms=latency_ms,
        minutes_saved=minutes,
        detail=detail,
    )


class Audit:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        clock: Callable[[], float] = time.time,
        retention_days: int = 400,
        on_record: Callable[[AuditRecord], None] | None = None,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._on_record = on_record  # metrics are derived from audit records, so they can never disagree
        self._retention_ms = retention_days * 86_400_000

    async def record(self, record: AuditRecord) -> str:
        stamped = record if record.time else _with_time(record, self._clock())
        data = stamped.to_json()
        data["detail"], _ = redact_secrets(str(data["detail"]))
        line = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
        # MINID trims by age (retention) without a separate sweeper; "~" lets Redis trim efficiently.
        min_id = max(0, int(stamped.time * 1000) - self._retention_ms)
        entry_id = await self._redis.xadd(AUDIT_STREAM, {"record": line}, minid=min_id, approximate=True)
        log.info(line)
        if self._on_record is not None:
            self._on_record(stamped)
        return str_if_bytes(entry_id)

    async def read(self, *, since_ms: int = 0, count: int = 10_000) -> list[dict[str, Any]]:
        rows = await self._redis.xrange(AUDIT_STREAM, min=f"{since_ms}-0" if since_ms else "-", count=count)
        records = []
        for _, fields in rows or []:
            if fields:
                records.append(json.loads(fields.get(b"record") or fields["record"]))
        return records


def _with_time(record: AuditRecord, now: float) -> AuditRecord:
    data = asdict(record)
    data["time"] = now
    return AuditRecord(**data)
