"""The approval rules that need no I/O: closed statuses, refusals, who may approve (SPEC §6)."""

from __future__ import annotations

import dataclasses
from typing import Any

from approvals.policy import FINAL_OUTCOMES, TERMINAL, may_approve
from approvals.store import Approval, ApprovalStatus, Vote, VoteKind, VoteResult, args_sha256

T0 = 1_764_079_320.0  # 2025-11-25 14:02:00 UTC
AT_1402 = f"<!date^{int(T0)}^{{time}}|14:02 UTC>"


def approval(**changes: Any) -> Approval:
    arguments = {"query_id": "20231125_0001"}
    base = Approval(
        id="a" + "1" * 23,
        turn_id="t1",
        team="T0CHATOPS",
        channel="C0INCIDENT",
        thread_ts="1764040000.000100",
        requester="U0ALICE",
        requester_sub="sub-alice",
        requester_email="alice@example.com",
        server="io.example/presto",
        short_name="presto",
        owner_team="data-platform",
        tool="kill_query",
        arguments=arguments,
        args_sha256=args_sha256(arguments),
        fingerprint="f" * 64,
        reason="blocks the cluster",
        approver_groups=("presto-oncall",),
        created_at=T0 - 600,
        expires_at=T0,
        seal="0" * 64,
        quorum=2,
    )
    return dataclasses.replace(base, **changes)


def result(kind: VoteKind, count: int = 0, **changes: Any) -> VoteResult:
    return VoteResult(kind, approval(**changes), count)


def votes(*users: str) -> tuple[Vote, ...]:
    return tuple(Vote(u, f"sub-{u}", f"{u}@example.com", T0) for u in users)


def test_a_request_is_closed_once_decided_against_expired_or_its_run_ended() -> None:
    assert ApprovalStatus.PENDING not in TERMINAL
    assert ApprovalStatus.APPROVED not in TERMINAL
    assert ApprovalStatus.RUNNING not in TERMINAL
    assert {ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED} <= TERMINAL
    assert FINAL_OUTCOMES < TERMINAL
    assert {ApprovalStatus.SUCCEEDED, ApprovalStatus.FAILED, ApprovalStatus.OUTCOME_UNKNOWN} == FINAL_OUTCOMES


def test_a_member_of_any_approver_group_may_approve() -> None:
    a = approval(approver_groups=("presto-oncall", "sre"))
    assert may_approve(a, {"sre", "data-eng"})
    assert not may_approve(a, {"data-eng"})
    assert not may_approve(a, set())
