"""A person is their `sub` (SPEC §5): the vote and reject transitions judge "own request" and "already voted"
by sub, and by Slack account too, so neither a second account nor a relinked one counts twice."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from approvals.store import Approval, ApprovalStatus, ApprovalStore, VoteResult
from tests.approvals.conftest import Clock
from tests.approvals.test_store import KEY, new


@pytest.fixture
def store(aredis: aioredis.Redis, clock: Clock) -> ApprovalStore:
    return ApprovalStore(aredis, clock=clock, seal_key=KEY)


async def approve(store: ApprovalStore, approval: Approval, user: str, sub: str) -> VoteResult:
    return await store.vote(approval.id, user=user, sub=sub, email=f"{sub}@example.com", eligible=True)


async def test_another_slack_account_of_the_requester_is_the_requester(store: ApprovalStore) -> None:
    approval = await new(store)  # asked by U0ALICE, sub-alice
    assert (await approve(store, approval, "U0ALICE2", "sub-alice")).kind == "own_request"
    rejected = await store.reject(approval.id, user="U0ALICE2", sub="sub-alice", eligible=True, reason="x")
    assert rejected.kind == "own_request"
    stored = await store.get(approval.id)
    assert stored is not None
    assert (stored.status, stored.approvals) == (ApprovalStatus.PENDING, ())
    attempts = await store.attempts(approval.id)
    assert [(a["user"], a["sub"], a["result"]) for a in attempts] == [
        ("U0ALICE2", "sub-alice", "own_request"),
        ("U0ALICE2", "sub-alice", "own_request"),
    ]


async def test_the_requesters_slack_account_relinked_to_another_person_still_cannot_approve(
    store: ApprovalStore,
) -> None:
    approval = await new(store)
    assert (await approve(store, approval, "U0ALICE", "sub-someone-else")).kind == "own_request"


async def test_two_slack_accounts_of_one_person_are_one_vote_toward_the_quorum(store: ApprovalStore) -> None:
    approval = await new(store, quorum=2)
    assert (await approve(store, approval, "U0BOB", "sub-bob")).kind == "counted"
    second = await approve(store, approval, "U0BOB2", "sub-bob")
    assert (second.kind, second.count) == ("duplicate", 1)
    assert second.approval.status is ApprovalStatus.PENDING
    done = await approve(store, approval, "U0CAROL", "sub-carol")
    assert (done.kind, done.count) == ("approved", 2)
    assert [v.sub for v in done.approval.approvals] == ["sub-bob", "sub-carol"]
    assert done.approval.approver_subs == ("sub-bob", "sub-carol")
    assert done.approval.decided_by == ("U0BOB", "U0CAROL")


async def test_a_slack_account_relinked_after_voting_does_not_vote_again(store: ApprovalStore) -> None:
    approval = await new(store, quorum=2)
    await approve(store, approval, "U0BOB", "sub-bob")
    again = await approve(store, approval, "U0BOB", "sub-bob-recreated")
    assert (again.kind, again.count) == ("duplicate", 1)


async def test_a_click_without_a_linked_person_decides_nothing(store: ApprovalStore) -> None:
    approval = await new(store)
    assert (await approve(store, approval, "U0BOB", "")).kind == "not_eligible"
    rejected = await store.reject(approval.id, user="U0BOB", sub="", eligible=True, reason="no")
    assert rejected.kind == "not_eligible"
    stored = await store.get(approval.id)
    assert stored is not None
    assert stored.status is ApprovalStatus.PENDING
