"""Who a new request is pushed to (SPEC §7, issue 18): every linked person who may approve it, once each.

A person is their `sub` (SPEC §5): two Slack accounts linked to one sub get one DM, on the account whose
groups were read most recently. The requester (their Slack account, or any account of their sub) gets none.
Eligibility here uses the groups as last read at linking or at the last click; it only decides who is told.
The click re-checks with groups no older than 5 minutes (approvals.service), so a stale group can cost a
DM, never a wrong decision.
"""

from __future__ import annotations

from collections.abc import Iterable

from approvals.approval import Approval
from approvals.policy import may_approve
from mcp_clients.tokens import Identity

__all__ = ["eligible_approvers"]


def eligible_approvers(approval: Approval, linked: Iterable[Identity]) -> list[Identity]:
    """One identity per eligible person, ordered by Slack account for a stable order of DMs."""
    chosen: dict[str, Identity] = {}
    for person in linked:
        if not person.sub or person.sub == approval.requester_sub or person.user == approval.requester:
            continue
        if not may_approve(approval, person.groups):
            continue
        known = chosen.get(person.sub)
        if known is None or (person.groups_at, known.user) > (known.groups_at, person.user):
            chosen[person.sub] = person
    return sorted(chosen.values(), key=lambda p: p.user)
