"""The approval rules that need no I/O: which statuses are closed, which clicks changed nothing, and who may
approve (SPEC §6 "Who may approve"). What people are told about them is the Slack edge's
(bot.approval_text).
"""

from __future__ import annotations

from collections.abc import Iterable

from approvals.approval import Approval, ApprovalStatus, VoteKind

__all__ = ["FINAL_OUTCOMES", "REFUSALS", "TERMINAL", "is_refusal", "may_approve"]

# How an approved run ends: what the server did, or that nobody can tell.
FINAL_OUTCOMES = frozenset({ApprovalStatus.SUCCEEDED, ApprovalStatus.FAILED, ApprovalStatus.OUTCOME_UNKNOWN})
# Nothing more will happen to the request: it was closed without a run, or its run ended.
TERMINAL = FINAL_OUTCOMES | {ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED, ApprovalStatus.WITHDRAWN}

REFUSALS: frozenset[VoteKind] = frozenset(
    {"already_decided", "expired", "own_request", "not_eligible", "duplicate", "not_requester"}
)


def is_refusal(kind: VoteKind) -> bool:
    """The click changed nothing (the clicker is told why)."""
    return kind in REFUSALS


def may_approve(approval: Approval, groups: Iterable[str]) -> bool:
    """Whether someone in `groups` is among the approval's approvers. Who they are (not the requester, not a
    second vote) is for the store's transition to decide, from the record."""
    return bool(set(approval.approver_groups) & set(groups))
