"""One approval: what was asked, for whom, on which server, and where it stands (SPEC §6, §7, §10).

The first block of `Approval` is fixed at creation (and the facts that decide what runs are sealed, see
approvals.seal); the rest is state that only approvals.store's transitions change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, NotRequired, TypedDict

from agent.transcript import canonical_json

__all__ = [
    "Approval",
    "ApprovalStatus",
    "CardRef",
    "NewApproval",
    "Status",
    "Vote",
    "VoteKind",
    "VoteResult",
    "args_sha256",
    "canonical_json",
]

VoteKind = Literal[
    "counted",
    "approved",
    "rejected",
    "already_decided",
    "expired",
    "own_request",
    "not_eligible",
    "duplicate",
    "withdrawn",
    "not_requester",
]


class ApprovalStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    WITHDRAWN = "WITHDRAWN"  # the requester took it back before a decision
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"


Status = ApprovalStatus  # the short name callers use


@dataclass(frozen=True)
class Vote:
    user: str  # the Slack account the click came from
    sub: str  # the person (SPEC §5): quorum counts distinct subs
    email: str
    at: float


@dataclass(frozen=True)
class CardRef:
    channel: str
    ts: str


@dataclass(frozen=True)
class Approval:
    """One request to run one tool call; the first block is fixed at creation, the rest is its state."""

    id: str
    turn_id: str
    team: str
    channel: str
    thread_ts: str
    requester: str
    requester_sub: str
    requester_email: str
    server: str
    short_name: str
    owner_team: str
    tool: str
    arguments: dict[str, Any]
    args_sha256: str
    fingerprint: str
    reason: str
    approver_groups: tuple[str, ...]
    created_at: float
    expires_at: float
    seal: str
    # The server as approved; "" only in records made before approvals were bound to one (never run).
    server_url: str = ""
    resource: str = ""
    quorum: int = 1
    source: str = "agent"  # agent | workflow
    identity: str = "user"  # user (the requester's token) | service (the bot's own, `identity: service`)
    workflow_run_id: str = ""
    step_id: str = ""
    model_name: str = ""
    tool_use_id: str = ""
    read_before: str = ""
    status: ApprovalStatus = ApprovalStatus.PENDING
    approvals: tuple[Vote, ...] = ()
    decided_by: tuple[str, ...] = ()  # Slack accounts, for people to read; the persons are in `approvals`
    decided_at: float | None = None
    reject_reason: str = ""
    cards: tuple[CardRef, ...] = ()
    started_at: float | None = None
    lease_until: float | None = None
    finished_at: float | None = None
    outcome_detail: str = ""
    # "bot": the detail is the bot's own reason for not calling the server; "server" (or "" in records
    # older than the field): what the server answered, which a private server's privacy covers.
    outcome_source: str = ""

    @property
    def count(self) -> int:
        return len(self.approvals)

    @property
    def approver_subs(self) -> tuple[str, ...]:
        return tuple(v.sub for v in self.approvals)


@dataclass(frozen=True)
class VoteResult:
    kind: VoteKind
    approval: Approval
    count: int


def args_sha256(arguments: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(arguments)).encode()).hexdigest()


class NewApproval(TypedDict):
    """What `create` is told; the id, digest, seal, times and state are the store's own."""

    turn_id: str
    team: str
    channel: str
    thread_ts: str
    requester: str
    requester_sub: str
    requester_email: str
    server: str
    server_url: str  # the remote the tool was listed from
    resource: str  # the audience its tokens are for
    short_name: str
    owner_team: str
    tool: str
    arguments: Mapping[str, Any]
    fingerprint: str
    reason: str
    approver_groups: Sequence[str]
    quorum: NotRequired[int]
    source: NotRequired[str]  # agent | workflow (checked)
    identity: NotRequired[str]  # user | service (checked): whose token the approved call runs with
    created_at: NotRequired[float]  # default: now
    expires_at: NotRequired[float]  # or give create() ttl_seconds
    workflow_run_id: NotRequired[str]
    step_id: NotRequired[str]
    model_name: NotRequired[str]
    tool_use_id: NotRequired[str]
    read_before: NotRequired[str]  # the tool outputs the model had read when it proposed this (display only)
