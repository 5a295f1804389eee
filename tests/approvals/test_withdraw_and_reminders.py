"""WITHDRAWN (the requester takes a request back) and the reminder schedule, against a real Redis: only the
requester (any account of their sub) withdraws, never after a decision; a due nudge is handed to exactly one
of many concurrent sweeps (issue 18)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from approvals.approvers import eligible_approvers
from approvals.policy import TERMINAL
from approvals.reminders import REMINDERS_KEY, ReminderSchedule
from approvals.store import PENDING_KEY, ApprovalStatus, ApprovalStore
from mcp_clients.tokens import Identity
from tests.approvals.conftest import T0, Clock
from tests.approvals.test_store import KEY, new


@pytest.fixture
def store(aredis: aioredis.Redis, clock: Clock) -> ApprovalStore:
    return ApprovalStore(aredis, clock=clock, seal_key=KEY)


async def test_only_the_requester_withdraws_and_only_before_a_decision(store: ApprovalStore) -> None:
    approval = await new(store)
    refused = await store.withdraw(approval.id, user="U0BOB", sub="sub-bob")
    assert refused.kind == "not_requester"
    assert refused.approval.status is ApprovalStatus.PENDING
    # Another Slack account of the requester's person may withdraw it.
    done = await store.withdraw(approval.id, user="U0ALICE2", sub="sub-alice")
    assert done.kind == "withdrawn"
    assert done.approval.status is ApprovalStatus.WITHDRAWN
    assert ApprovalStatus.WITHDRAWN in TERMINAL
    assert done.approval.decided_by == ("U0ALICE2",)
    assert (await store.vote(approval.id, user="U0BOB", sub="sub-bob", email="", eligible=True)).kind == (
        "already_decided"
    )
    assert await store.pending_for_groups(None) == []
    assert [a["result"] for a in await store.attempts(approval.id)] == [
        "not_requester",
        "withdrawn",
        "already_decided",
    ]


async def test_an_approved_request_is_not_withdrawn(store: ApprovalStore) -> None:
    approval = await new(store)
    await store.vote(approval.id, user="U0BOB", sub="sub-bob", email="", eligible=True)
    result = await store.withdraw(approval.id, user="U0ALICE", sub="sub-alice")
    assert result.kind == "already_decided"
    assert result.approval.status is ApprovalStatus.APPROVED


async def test_an_unlinked_account_that_is_not_the_requester_cannot_withdraw(store: ApprovalStore) -> None:
    approval = await new(store, requester_sub="")
    assert (await store.withdraw(approval.id, user="U0BOB", sub="")).kind == "not_requester"
    assert (await store.withdraw(approval.id, user="U0ALICE", sub="")).kind == "withdrawn"


async def test_a_withdraw_past_the_expiry_expires_it(
    store: ApprovalStore, clock: Clock, aredis: aioredis.Redis
) -> None:
    approval = await new(store, ttl_seconds=30)
    clock.now = T0 + 31
    result = await store.withdraw(approval.id, user="U0ALICE", sub="sub-alice")
    assert (result.kind, result.approval.status) == ("expired", ApprovalStatus.EXPIRED)
    assert await aredis.zscore(PENDING_KEY, approval.id) is None


async def test_the_queue_is_oldest_first(store: ApprovalStore, clock: Clock) -> None:
    first = await new(store, ttl_seconds=600)
    clock.now = T0 + 5
    second = await new(store, ttl_seconds=60)  # expires sooner, but was asked later
    assert [a.id for a in await store.pending_for_groups(["presto-oncall"])] == [first.id, second.id]


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[aioredis.Redis]]:
    made = [aioredis.Redis.from_url(redis_url) for _ in range(8)]
    yield made
    for c in made:
        await c.aclose()


async def test_each_due_nudge_goes_to_exactly_one_of_many_sweeps(
    store: ApprovalStore, clients: list[aioredis.Redis]
) -> None:
    approvals = [await new(store, ttl_seconds=100) for _ in range(20)]
    schedules = [ReminderSchedule(c) for c in clients]
    for a in approvals:
        await schedules[0].schedule(a)
    assert await schedules[0].due(T0 + 49) == []  # nothing before half the TTL
    claimed = await asyncio.gather(*(s.due(T0 + 50) for s in schedules))
    got = [nudge for batch in claimed for nudge in batch]
    assert sorted(got) == sorted(("remind", a.id) for a in approvals)  # each once, across all sweeps
    late = await asyncio.gather(*(s.due(T0 + 99) for s in schedules))
    assert sorted(n for batch in late for n in batch) == sorted(("escalate", a.id) for a in approvals)
    assert await clients[0].zcard(REMINDERS_KEY) == 0


def _person(user: str, sub: str, groups: tuple[str, ...], at: float = T0) -> Identity:
    return Identity("T0CHATOPS", user, sub, f"{sub}@example.com", frozenset(groups), at, ())


async def test_the_push_goes_to_each_eligible_person_once_never_the_requester(store: ApprovalStore) -> None:
    approval = await new(store)
    linked = [
        _person("U0ALICE2", "sub-alice", ("presto-oncall",)),  # the requester's other account
        _person("U0BOB", "sub-bob", ("presto-oncall",), at=T0 - 100),
        _person("U0BOB2", "sub-bob", ("presto-oncall",), at=T0),  # Bob's groups read more recently here
        _person("U0CAROL", "sub-carol", ("presto-oncall", "data-eng")),
        _person("U0DAVE", "sub-dave", ("finance",)),
        _person("U0NOSUB", "", ("presto-oncall",)),
    ]
    assert [p.user for p in eligible_approvers(approval, linked)] == ["U0BOB2", "U0CAROL"]
