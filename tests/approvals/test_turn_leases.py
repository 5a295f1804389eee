"""Leases of running turns (approvals.turns) and what the sweep does with lapsed ones (flows.recovery),
against a real Redis and real RQ queues."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from approvals.home_records import HomeRecords
from approvals.turn_queue import job_state, queued_job_ids
from approvals.turns import (
    RUNNING_KEY,
    Turn,
    TurnStore,
    base_attempt,
    recoveries,
    recovery_attempt,
)
from bot.poster import Poster, make_slack_client
from bot.queues import Queues
from bot.turn_output import SlackTurnOutput
from flows.recovery import TurnRecovery
from tests.approvals.conftest import Clock


@pytest.fixture
def store(aredis: aioredis.Redis, clock: Clock) -> TurnStore:
    return TurnStore(aredis, clock=clock)


@pytest.fixture
def queues(redis_url: str) -> Queues:
    return Queues(redis.Redis.from_url(redis_url))


@pytest.fixture
def recovery(store: TurnStore, aredis: aioredis.Redis, queues: Queues) -> TurnRecovery:
    # The hand-on paths never reach Slack; the poster points at a closed loopback port to prove it.
    poster = Poster(make_slack_client("xoxb-unused", "http://127.0.0.1:9/api/"), aredis, "T0CHATOPS")
    return TurnRecovery(store, SlackTurnOutput(poster, HomeRecords(aredis)), queues)


async def admitted(store: TurnStore, ts: str, thread_ts: str = "100.000") -> Turn:
    turn, new = await store.admit(
        team="T0CHATOPS",
        channel="C0DATAENG",
        channel_type="channel",
        user="U0ALICE",
        text="what is running?",
        ts=ts,
        thread_ts=thread_ts,
        source="mention",
    )
    assert new
    return turn


def job_args(queues: Queues, job_id: str) -> list[object]:
    """What the queued job will run: (turn, attempt), as a turn pool reads it off the queue."""
    assert job_id in queued_job_ids(queues.connection)
    state = job_state(queues.connection, job_id)
    return [state["turn"], state["attempt"]]


def test_recovery_attempts_keep_the_kind_of_the_attempt_they_continue() -> None:
    assert (recoveries("first"), base_attempt("first")) == (0, "first")
    assert recovery_attempt("first", 1) == "recover-1"
    assert (recoveries("recover-1"), base_attempt("recover-1")) == (1, "first")
    assert recovery_attempt("recover-1", 2) == "recover-2"
    assert recovery_attempt("resume-0123456789ab", 1) == "resume-0123456789ab-recover-1"
    assert base_attempt("resume-0123456789ab-recover-2") == "resume-0123456789ab"
    assert recoveries("resume-0123456789ab-recover-2") == 2
    assert recoveries("handoff") == 0


async def test_start_is_the_claim_and_leaves_a_lease_that_renewal_extends(
    store: TurnStore, clock: Clock
) -> None:
    turn = await admitted(store, "100.000")
    assert await store.start(turn.id, "first", 30)
    assert not await store.start(turn.id, "first", 30)  # a duplicate job stops here
    assert await store.status(turn.id) | {"at": ""} == {"status": "running", "attempt": "first", "at": ""}
    clock.now += 20
    assert await store.expired_leases(clock.now) == []
    assert await store.renew(turn.id, "first", 30)
    clock.now += 20
    assert await store.expired_leases(clock.now) == []  # renewed at +20: good until +50
    clock.now += 11
    assert await store.expired_leases(clock.now) == [(turn.id, "first")]
    await store.release(turn.id, "first")
    assert not await store.renew(turn.id, "first", 30)  # a taken-over lease is not brought back
    assert await store.expired_leases(clock.now + 1000) == []


async def test_a_lapsed_running_attempt_is_run_again_once_per_sweep(
    store: TurnStore, recovery: TurnRecovery, queues: Queues, clock: Clock, aredis: aioredis.Redis
) -> None:
    turn = await admitted(store, "100.000")
    assert await store.start(turn.id, "first", 30)
    clock.now += 31
    assert await recovery.sweep(clock.now) == {"turns_recovered": 1, "turns_given_up": 0}
    assert job_args(queues, f"{turn.id}-recover-1") == [turn.id, "recover-1"]
    assert await aredis.zcard(RUNNING_KEY) == 0
    assert await recovery.sweep(clock.now) == {"turns_recovered": 0, "turns_given_up": 0}


async def test_an_attempt_that_finished_but_died_before_handing_on_its_thread_only_hands_it_on(
    store: TurnStore, recovery: TurnRecovery, queues: Queues, clock: Clock
) -> None:
    first, second = await admitted(store, "100.000"), await admitted(store, "101.000")
    assert await store.start(first.id, "first", 30)
    assert await store.begin_run(first.thread, first.id)
    assert await store.start(second.id, "first", 30)
    assert not await store.begin_run(second.thread, second.id)  # waits behind the first
    await store.set_status(second.id, "waiting_for_thread")
    await store.release(second.id, "first")
    await store.set_status(first.id, "answered")  # ... and then its worker died
    clock.now += 31
    assert await recovery.sweep(clock.now) == {"turns_recovered": 0, "turns_given_up": 0}
    assert not queues.job_exists(f"{first.id}-recover-1")  # its answer is out: not run again
    assert job_args(queues, f"{second.id}-handoff") == [second.id, "handoff"]
    assert await store.active_run(first.thread) == second.id


async def test_a_thread_handed_on_but_never_queued_is_queued_by_the_sweep(
    store: TurnStore, recovery: TurnRecovery, queues: Queues, clock: Clock
) -> None:
    first, second = await admitted(store, "100.000"), await admitted(store, "101.000")
    assert await store.start(first.id, "first", 30)
    assert await store.begin_run(first.thread, first.id)
    assert not await store.begin_run(second.thread, second.id)
    await store.set_status(second.id, "waiting_for_thread")
    await store.set_status(first.id, "answered")
    assert await store.end_run(first.thread, first.id) == second.id  # then died before enqueueing it
    clock.now += 31
    await recovery.sweep(clock.now)
    assert job_args(queues, f"{second.id}-handoff") == [second.id, "handoff"]


async def test_a_running_thread_owner_is_left_alone(
    store: TurnStore, recovery: TurnRecovery, queues: Queues, clock: Clock
) -> None:
    first, second = await admitted(store, "100.000"), await admitted(store, "101.000")
    assert await store.start(second.id, "first", 30)
    assert await store.begin_run(second.thread, second.id)  # the second got the thread and runs
    assert await store.start(first.id, "first", 5)
    assert not await store.begin_run(first.thread, first.id)
    await store.set_status(first.id, "waiting_for_thread")  # ... and the first died before releasing
    clock.now += 6
    await recovery.sweep(clock.now)
    assert not queues.job_exists(f"{second.id}-handoff")
    assert not queues.job_exists(f"{first.id}-recover-1")
