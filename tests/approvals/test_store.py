"""The approval state machine against a real Redis: every transition atomic, every click recorded."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from approvals.store import (
    PENDING_KEY,
    RUNNING_KEY,
    Approval,
    ApprovalStatus,
    ApprovalStore,
    UnknownApproval,
    args_sha256,
)
from bot.approval_text import refusal_text
from fixtures.redis_proc import free_port
from tests.approvals.conftest import T0, Clock

T = TypeVar("T")
KEY = b"k" * 32
APPROVERS = [f"U0APPR{i:02d}" for i in range(20)]


@pytest.fixture
def store(aredis: aioredis.Redis, clock: Clock) -> ApprovalStore:
    return ApprovalStore(aredis, clock=clock, seal_key=KEY)


@pytest.fixture
async def stores(redis_url: str, clock: Clock) -> AsyncIterator[list[ApprovalStore]]:
    """20 stores, each on its own connection pool: what 20 web processes would hold."""
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(20)]
    yield [ApprovalStore(c, clock=clock, seal_key=KEY) for c in clients]
    for c in clients:
        await c.aclose()


async def bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, timeout=20)


async def new(store: ApprovalStore, **overrides: Any) -> Approval:
    fields: dict[str, Any] = {
        "turn_id": "t0001",
        "team": "T0CHATOPS",
        "channel": "C0INCIDENT",
        "thread_ts": "1764040000.000100",
        "requester": "U0ALICE",
        "requester_sub": "sub-alice",
        "requester_email": "alice@example.com",
        "server": "io.example/presto",
        "server_url": "https://presto.mcp.example.com/mcp",
        "resource": "https://presto.mcp.example.com/mcp",
        "short_name": "presto",
        "owner_team": "data-platform",
        "tool": "kill_query",
        "arguments": {"query_id": "20231125_0001", "reason": "runaway", "force": True, "limit": 2.5},
        "fingerprint": "f" * 64,
        "reason": "The query has run for 3 hours and blocks the cluster.",
        "approver_groups": ["presto-oncall"],
        "quorum": 1,
        "ttl_seconds": 60,
        "model_name": "claude-test",
        "tool_use_id": "toolu_01",
    }
    fields.update(overrides)
    return await store.create(**fields)


async def vote(store: ApprovalStore, approval: Approval, user: str, *, eligible: bool = True) -> Any:
    return await store.vote(
        approval.id, user=user, sub=f"sub-{user}", email=f"{user}@example.com", eligible=eligible
    )


# ----- create and read --------------------------------------------------------------------------------------


async def test_a_created_approval_reads_back_identically_and_is_listed_for_its_turn(
    store: ApprovalStore,
) -> None:
    created = await new(store, arguments={"sql": "SELECT 'é' -- ✓", "ratio": 0.1 + 0.2, "n": 10**20})
    assert re.fullmatch(r"a[0-9a-f]{23}", created.id)
    assert created.status is ApprovalStatus.PENDING
    assert created.expires_at == T0 + 60
    assert await store.get(created.id) == created
    assert await store.for_turn("t0001") == [created]
    assert await store.for_turn("t-other") == []


async def test_args_sha256_is_the_sha256_of_canonical_json(store: ApprovalStore) -> None:
    arguments = {"b": [1, {"z": "ü", "a": None}], "a": "x"}
    created = await new(store, arguments=arguments)
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert created.args_sha256 == hashlib.sha256(canonical.encode()).hexdigest() == args_sha256(arguments)


async def test_create_takes_explicit_creation_and_expiry_times_instead_of_a_ttl(store: ApprovalStore) -> None:
    fields: dict[str, Any] = {"created_at": T0 - 10, "expires_at": T0 + 50, "ttl_seconds": None}
    created = await new(store, **fields)
    assert (created.created_at, created.expires_at) == (T0 - 10, T0 + 50)
    assert await store.due_for_expiry(T0 + 50) == [created.id]


async def test_create_refuses_a_request_nobody_could_approve(store: ApprovalStore) -> None:
    with pytest.raises(ValueError, match="quorum"):
        await new(store, quorum=0)
    with pytest.raises(ValueError, match="nobody"):
        await new(store, approver_groups=[])
    with pytest.raises(ValueError, match="ttl"):
        await new(store, ttl_seconds=0)
    with pytest.raises(ValueError, match="expiry"):
        await new(store, ttl_seconds=None, expires_at=T0 - 1)


async def test_pending_for_groups_lists_open_requests_those_groups_may_decide(
    store: ApprovalStore, clock: Clock
) -> None:
    presto = await new(store, approver_groups=["presto-oncall"])
    spark = await new(store, approver_groups=["spark-oncall", "sre"], ttl_seconds=30)
    decided = await new(store, approver_groups=["sre"])
    await vote(store, decided, "U0BOB")
    assert [a.id for a in await store.pending_for_groups(["sre"])] == [spark.id]
    assert [a.id for a in await store.pending_for_groups(["sre", "presto-oncall"])] == [spark.id, presto.id]
    assert await store.pending_for_groups(["data-eng"]) == []
    clock.now = T0 + 30  # spark's request is past its expiry, even before the sweeper runs
    assert [a.id for a in await store.pending_for_groups(["sre", "presto-oncall"])] == [presto.id]


async def test_unknown_or_malformed_ids_find_nothing(store: ApprovalStore) -> None:
    assert await store.get("a" + "0" * 23) is None
    assert await store.get("not-an-id") is None
    with pytest.raises(UnknownApproval):
        await store.vote("a" + "0" * 23, user="U0BOB", sub="s", email="e", eligible=True)
    with pytest.raises(UnknownApproval):
        await store.reject("../etc", user="U0BOB", sub="s", eligible=True, reason="no")
    assert await store.start("a" + "0" * 23, lease_seconds=30) is None
    assert not await store.expire("a" + "0" * 23)
    assert not await store.add_card("a" + "0" * 23, "C0INCIDENT", "1.2")


# ----- votes ------------------------------------------------------------------------------------------------


async def test_quorum_two_counts_one_then_ignores_a_repeat_and_the_requester_then_approves_on_two(
    store: ApprovalStore,
) -> None:
    approval = await new(store, quorum=2)
    steps = [("U0BOB", "counted", 1), ("U0BOB", "duplicate", 1), ("U0ALICE", "own_request", 1)]
    for user, kind, count in steps:
        result = await vote(store, approval, user)
        assert (result.kind, result.count, result.approval.status) == (kind, count, ApprovalStatus.PENDING)
    result = await vote(store, approval, "U0CAROL")
    assert (result.kind, result.count, result.approval.status) == ("approved", 2, ApprovalStatus.APPROVED)
    assert result.approval.decided_by == ("U0BOB", "U0CAROL")
    assert result.approval.decided_at == T0
    assert [(v.user, v.sub, v.email) for v in result.approval.approvals] == [
        ("U0BOB", "sub-U0BOB", "U0BOB@example.com"),
        ("U0CAROL", "sub-U0CAROL", "U0CAROL@example.com"),
    ]
    assert await store.get(approval.id) == result.approval
    assert [a["result"] for a in await store.attempts(approval.id)] == [
        "counted",
        "duplicate",
        "own_request",
        "approved",
    ]
    assert await store.due_for_expiry(T0 + 3600) == []  # a decided request leaves the expiry queue


async def test_self_approval_is_refused_the_request_stays_pending_and_the_attempt_is_recorded(
    store: ApprovalStore,
) -> None:
    approval = await new(store)
    result = await vote(store, approval, "U0ALICE")
    assert result.kind == "own_request"
    assert result.count == 0
    stored = await store.get(approval.id)
    assert stored is not None
    assert stored.status is ApprovalStatus.PENDING
    assert stored.approvals == ()
    assert await store.attempts(approval.id) == [
        {"user": "U0ALICE", "sub": "sub-U0ALICE", "action": "approve", "result": "own_request", "at": T0}
    ]


async def test_an_approver_outside_the_groups_is_refused_and_nothing_is_counted(store: ApprovalStore) -> None:
    approval = await new(store)
    result = await vote(store, approval, "U0DAVE", eligible=False)
    assert (result.kind, result.count, result.approval.status) == ("not_eligible", 0, ApprovalStatus.PENDING)
    assert [a["result"] for a in await store.attempts(approval.id)] == ["not_eligible"]


async def test_the_requester_is_refused_as_requester_even_when_also_not_eligible(
    store: ApprovalStore,
) -> None:
    approval = await new(store)
    assert (await vote(store, approval, "U0ALICE", eligible=False)).kind == "own_request"


async def test_a_closed_request_refuses_everyone_as_already_decided(store: ApprovalStore) -> None:
    approval = await new(store)
    await vote(store, approval, "U0BOB")
    for user, eligible in (("U0BOB", True), ("U0CAROL", True), ("U0ALICE", True), ("U0DAVE", False)):
        result = await vote(store, approval, user, eligible=eligible)
        assert result.kind == "already_decided"
        assert result.approval.status is ApprovalStatus.APPROVED
        assert result.approval.decided_by == ("U0BOB",)
    assert "Already approved by <@U0BOB>" in refusal_text(result)
    assert len(await store.attempts(approval.id)) == 5


# ----- expiry -----------------------------------------------------------------------------------------------


async def test_the_sweeper_expires_a_due_request_and_a_later_vote_is_refused_as_expired(
    store: ApprovalStore,
) -> None:
    approval = await new(store, ttl_seconds=60)
    assert await store.due_for_expiry(T0 + 59) == []
    assert not await store.expire(approval.id, now=T0 + 59)
    assert await store.due_for_expiry(T0 + 60) == [approval.id]
    assert await store.expire(approval.id, now=T0 + 60)
    assert not await store.expire(approval.id, now=T0 + 61)  # once only
    assert await store.due_for_expiry(T0 + 3600) == []
    result = await vote(store, approval, "U0BOB")
    assert result.kind == "already_decided"
    assert result.approval.status is ApprovalStatus.EXPIRED
    assert refusal_text(result).startswith("This request expired at <!date^")
    assert await store.start(approval.id, lease_seconds=30) is None


async def test_a_vote_after_expiry_but_before_the_sweeper_expires_it_and_is_refused(
    store: ApprovalStore, clock: Clock
) -> None:
    approval = await new(store, ttl_seconds=60)
    clock.now = T0 + 60
    result = await vote(store, approval, "U0BOB")
    assert (result.kind, result.approval.status) == ("expired", ApprovalStatus.EXPIRED)
    rejected = await store.reject(approval.id, user="U0CAROL", sub="s", eligible=True, reason="late")
    assert rejected.kind == "already_decided"
    assert await store.due_for_expiry(T0 + 3600) == []
    assert [a["result"] for a in await store.attempts(approval.id)] == ["expired", "already_decided"]


# ----- rejection --------------------------------------------------------------------------------------------


async def test_a_rejection_records_the_reason_and_who_rejected(store: ApprovalStore) -> None:
    approval = await new(store, quorum=2)
    await vote(store, approval, "U0BOB")
    result = await store.reject(
        approval.id, user="U0CAROL", sub="sub-carol", eligible=True, reason="Not <now>"
    )
    assert result.kind == "rejected"
    assert result.approval.status is ApprovalStatus.REJECTED
    assert (result.approval.reject_reason, result.approval.decided_by) == ("Not <now>", ("U0CAROL",))
    assert await store.start(approval.id, lease_seconds=30) is None
    assert [(a["action"], a["result"]) for a in await store.attempts(approval.id)] == [
        ("approve", "counted"),
        ("reject", "rejected"),
    ]


async def test_rejection_is_refused_for_the_requester_and_for_non_approvers(store: ApprovalStore) -> None:
    approval = await new(store)
    own = await store.reject(approval.id, user="U0ALICE", sub="s", eligible=True, reason="x")
    outsider = await store.reject(approval.id, user="U0DAVE", sub="s", eligible=False, reason="x")
    assert (own.kind, outsider.kind) == ("own_request", "not_eligible")
    assert (await store.get(approval.id)).status is ApprovalStatus.PENDING  # type: ignore[union-attr]


# ----- races ------------------------------------------------------------------------------------------------


async def test_twenty_concurrent_eligible_votes_on_quorum_one_approve_exactly_once(
    stores: list[ApprovalStore],
) -> None:
    approval = await new(stores[0])
    results = await bounded(
        asyncio.gather(*(vote(s, approval, user) for s, user in zip(stores, APPROVERS, strict=True)))
    )
    assert Counter(r.kind for r in results) == {"approved": 1, "already_decided": 19}
    [winner] = [r for r in results if r.kind == "approved"]
    assert all(r.approval.decided_by == winner.approval.decided_by for r in results if r.kind != "approved")
    stored = await stores[0].get(approval.id)
    assert stored is not None
    assert stored.status is ApprovalStatus.APPROVED
    assert len(stored.approvals) == 1
    assert len(await stores[0].attempts(approval.id)) == 20


async def test_an_approve_and_a_reject_at_the_same_moment_have_exactly_one_winner(
    stores: list[ApprovalStore],
) -> None:
    for _ in range(10):
        approval = await new(stores[0])
        approve, reject = await bounded(
            asyncio.gather(
                vote(stores[1], approval, "U0BOB"),
                stores[2].reject(approval.id, user="U0CAROL", sub="s", eligible=True, reason="no"),
            )
        )
        assert sorted([approve.kind, reject.kind]) in (
            ["already_decided", "approved"],
            ["already_decided", "rejected"],
        )
        stored = await stores[0].get(approval.id)
        assert stored is not None
        won = ApprovalStatus.APPROVED if approve.kind == "approved" else ApprovalStatus.REJECTED
        assert stored.status is won


async def test_ten_concurrent_starts_let_exactly_one_caller_run(stores: list[ApprovalStore]) -> None:
    approval = await new(stores[0])
    await vote(stores[0], approval, "U0BOB")
    started = await bounded(asyncio.gather(*(s.start(approval.id, lease_seconds=30) for s in stores[:10])))
    runners = [a for a in started if a is not None]
    assert len(runners) == 1
    assert runners[0].status is ApprovalStatus.RUNNING
    assert (runners[0].started_at, runners[0].lease_until) == (T0, T0 + 30)
    assert await stores[0].get(approval.id) == runners[0]
    assert await stores[0].stale_running(T0 + 30) == [approval.id]


# ----- execution --------------------------------------------------------------------------------------------


async def test_start_needs_an_approved_request(store: ApprovalStore) -> None:
    approval = await new(store, quorum=2)
    assert await store.start(approval.id, lease_seconds=30) is None
    await vote(store, approval, "U0BOB")
    assert await store.start(approval.id, lease_seconds=30) is None
    await vote(store, approval, "U0CAROL")
    assert await store.start(approval.id, lease_seconds=30) is not None
    assert await store.start(approval.id, lease_seconds=30) is None


async def test_finish_only_moves_a_running_request_to_an_outcome(store: ApprovalStore, clock: Clock) -> None:
    approval = await new(store)
    assert not await store.finish(approval.id, ApprovalStatus.SUCCEEDED)  # pending
    await vote(store, approval, "U0BOB")
    assert not await store.finish(approval.id, ApprovalStatus.SUCCEEDED)  # approved, not started
    with pytest.raises(ValueError, match="SUCCEEDED"):
        await store.finish(approval.id, ApprovalStatus.APPROVED)
    await store.start(approval.id, lease_seconds=30)
    clock.now = T0 + 5
    assert await store.finish(approval.id, ApprovalStatus.FAILED, "HTTP 500 from presto")
    assert not await store.finish(approval.id, ApprovalStatus.SUCCEEDED)  # an outcome is final
    stored = await store.get(approval.id)
    assert stored is not None
    assert (stored.status, stored.outcome_detail, stored.finished_at) == (
        ApprovalStatus.FAILED,
        "HTTP 500 from presto",
        T0 + 5,
    )
    assert await store.stale_running(T0 + 3600) == []


async def test_a_run_past_its_lease_is_marked_outcome_unknown_and_its_late_finish_is_ignored(
    store: ApprovalStore, clock: Clock
) -> None:
    approval = await new(store)
    await vote(store, approval, "U0BOB")
    await store.start(approval.id, lease_seconds=30)
    assert await store.stale_running(T0 + 29) == []
    assert not await store.mark_unknown(approval.id, "worker lost", now=T0 + 29)  # still within its lease
    assert await store.stale_running(T0 + 30) == [approval.id]
    clock.now = T0 + 30
    assert await store.mark_unknown(approval.id, "worker lost")
    assert not await store.finish(approval.id, ApprovalStatus.SUCCEEDED)
    assert not await store.mark_unknown(approval.id, "again")
    stored = await store.get(approval.id)
    assert stored is not None
    assert (stored.status, stored.outcome_detail) == (ApprovalStatus.OUTCOME_UNKNOWN, "worker lost")
    assert await store.stale_running(T0 + 3600) == []
    assert await store.start(approval.id, lease_seconds=30) is None  # never re-run on its own


async def test_each_posted_card_is_recorded_once(store: ApprovalStore) -> None:
    approval = await new(store)
    assert await store.add_card(approval.id, "C0INCIDENT", "1764040001.000200")
    assert await store.add_card(approval.id, "C0APPROVALS", "1764040001.000300")
    assert await store.add_card(approval.id, "C0INCIDENT", "1764040001.000200")
    stored = await store.get(approval.id)
    assert stored is not None
    assert [(c.channel, c.ts) for c in stored.cards] == [
        ("C0INCIDENT", "1764040001.000200"),
        ("C0APPROVALS", "1764040001.000300"),
    ]


# ----- integrity --------------------------------------------------------------------------------------------


async def test_an_untouched_record_verifies(store: ApprovalStore) -> None:
    approval = await new(store)
    await vote(store, approval, "U0BOB")
    stored = await store.get(approval.id)
    assert stored is not None
    assert await store.verify(stored) is None


async def test_verify_catches_arguments_edited_directly_in_redis(
    store: ApprovalStore, aredis: aioredis.Redis
) -> None:
    approval = await new(store)
    await vote(store, approval, "U0BOB")
    edited = dict(approval.arguments, query_id="*")
    await aredis.hset(f"chatops:approval:{approval.id}", "arguments", json.dumps(edited))
    stored = await store.get(approval.id)
    assert stored is not None
    assert stored.arguments["query_id"] == "*"
    assert await store.verify(stored) == "arguments changed after approval"


async def test_verify_catches_arguments_and_digest_edited_together(
    store: ApprovalStore, aredis: aioredis.Redis
) -> None:
    approval = await new(store)
    edited = dict(approval.arguments, query_id="*")
    await aredis.hset(
        f"chatops:approval:{approval.id}",
        mapping={"arguments": json.dumps(edited), "args_sha256": args_sha256(edited)},
    )
    stored = await store.get(approval.id)
    assert stored is not None
    assert await store.verify(stored) == "seal mismatch"


async def test_the_identity_an_approval_runs_with_is_sealed(
    store: ApprovalStore, aredis: aioredis.Redis
) -> None:
    """Switching a record to the bot's service identity (or away from it) in Redis is refused at execution;
    a record written before `identity` existed still verifies, as a user-identity record."""
    service = await new(store, identity="service")
    person = await new(store)
    older = await new(store)
    await aredis.hset(f"chatops:approval:{service.id}", "identity", "user")
    await aredis.hset(f"chatops:approval:{person.id}", "identity", "service")
    await aredis.hdel(f"chatops:approval:{older.id}", "identity")
    for approval_id, expected in (
        (service.id, "seal mismatch"),
        (person.id, "seal mismatch"),
        (older.id, None),
    ):
        stored = await store.get(approval_id)
        assert stored is not None
        assert await store.verify(stored) == expected, approval_id
    kept = await store.get(older.id)
    assert kept is not None
    assert kept.identity == "user"
    with pytest.raises(ValueError, match="identity"):
        await new(store, identity="admin")


async def test_a_record_sealed_with_another_key_does_not_verify(
    store: ApprovalStore, aredis: aioredis.Redis
) -> None:
    approval = await new(store)
    other = ApprovalStore(aredis, seal_key=b"another key, 32 bytes long......")
    assert await other.verify(approval) == "seal mismatch"
    assert await store.verify(approval) is None


async def test_redis_being_down_surfaces_as_a_redis_error() -> None:
    client = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    store = ApprovalStore(client, seal_key=KEY)
    try:
        with pytest.raises(redis.ConnectionError):
            await bounded(store.vote("a" + "0" * 23, user="U0BOB", sub="s", email="e", eligible=True))
        with pytest.raises(redis.ConnectionError):
            await bounded(new(store))
    finally:
        await client.aclose()


async def test_the_queues_hold_only_ids(store: ApprovalStore, aredis: aioredis.Redis) -> None:
    approval = await new(store)
    assert await aredis.zrange(PENDING_KEY, 0, -1) == [approval.id.encode()]
    await vote(store, approval, "U0BOB")
    await store.start(approval.id, lease_seconds=30)
    running = await aredis.zrange(RUNNING_KEY, 0, -1, withscores=True)
    assert [tuple(entry) for entry in running] == [(approval.id.encode(), T0 + 30)]
