"""Between an approval and its outcome (ACCEPTANCE 30-33, 37): whatever fails, an approved action runs at most
once, under the requester's identity, and the people involved hear about it. A live worker keeps its action's
lease however long the call takes; a registry that cannot be read before the call ends it FAILED."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import redis as sync_redis
from rq.job import Job
from rq.serializers import JSONSerializer

from approvals.execution import REGISTRY_DOWN
from approvals.store import APPROVED_KEY, RUNNING_KEY, Approval, Status
from bot.approval_text import RECORDED_LATER
from bot.queues import Queues
from bot.wiring import Wiring
from fixtures.anthropic_fake import Body, Reply, resumed, text, tool_use
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from fixtures.redis_proc import free_port
from fixtures.waiting import wait_until
from registry_cache.snapshot import ATTEMPT_KEY, SNAPSHOT_KEY, VERSION_KEY
from tests.faults.conftest import Scenario, with_services
from tests.processes import kill_worker

CHANNEL = "C0INCIDENT"


def proposer(body: Body) -> Reply:
    if resumed(body):
        return text("Told about the outcome.")
    return tool_use(
        "presto__kill_query", {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway"}, text_before="Kill it."
    )


def proposed(s: Scenario, quorum: int | None = None) -> Approval:
    if quorum is not None:
        s.world.registry.patch_governance("io.example/presto", {"tools": {"kill_query": {"quorum": quorum}}})
    for person in ("alice", "bob", "carol"):
        s.link(person)
    s.world.anthropic.set_default(proposer)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "kill the runaway backfill")
    s.ingress.post(mention)
    s.work()
    (approval,) = s.approvals(CHANNEL, mention.event["ts"])
    return approval


def kills(s: Scenario) -> int:
    return s.world.servers["presto"].ledger.count("kill_query")


def thread_text(s: Scenario, approval: Approval) -> str:
    return " ".join(m.text for m in s.bot_messages(CHANNEL, approval.thread_ts))


def sweep_now(s: Scenario) -> None:
    Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()


def age_decision(s: Scenario, approval: Approval, seconds: float = 120) -> None:
    """Make the decision older than the sweeper's grace period (as if time had passed)."""
    if s.redis.zscore(APPROVED_KEY, approval.id) is not None:
        s.redis.zadd(APPROVED_KEY, {approval.id: time.time() - seconds})


def the_sweeper_runs_it_once(s: Scenario, approval: Approval) -> None:
    """`approval` is APPROVED with no job that will run it: nothing runs until the sweeper re-enqueues it,
    and then it runs once, however many sweeps see it."""
    assert s.work() == 0
    assert kills(s) == 0
    age_decision(s, approval)
    sweep_now(s)
    sweep_now(s)  # two sweeps (two workers) re-enqueue it under one job id
    s.work()
    assert s.approval(approval.id).status == Status.SUCCEEDED
    assert kills(s) == 1
    sweep_now(s)
    s.work()
    assert kills(s) == 1
    assert s.redis.zcard(APPROVED_KEY) == 0


def test_an_enqueue_that_fails_after_the_decision_keeps_it_approved_and_the_sweeper_runs_it_once(
    scenario: Scenario,
) -> None:
    s = scenario
    approval = proposed(s)
    s.click("U0BOB", approval)  # 1 of 2
    unreachable = Queues(sync_redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0"))

    async def carol_approves_while_the_queue_is_down(svc: Wiring) -> str:
        clicks = dataclasses.replace(svc, queues=unreachable).approval_clicks()
        return await clicks.vote(approval.id, user="U0CAROL", channel=CHANNEL, message_ts=s.card_ts(approval))

    assert with_services(s, carol_approves_while_the_queue_is_down) == RECORDED_LATER
    assert s.approval(approval.id).status == Status.APPROVED  # durable, though nothing was queued
    the_sweeper_runs_it_once(s, approval)


def test_an_approved_action_whose_job_ended_without_running_it_is_run_once_by_the_sweeper(
    scenario: Scenario,
) -> None:
    s = scenario
    approval = proposed(s, quorum=1)
    s.click("U0CAROL", approval)
    # Its job ends before it could start the run (an operator cancelled it, or RQ gave it up): the record
    # stays APPROVED, and nothing would ever run it.
    Job.fetch(f"exec-{approval.id}", connection=s.redis, serializer=JSONSerializer).cancel()
    the_sweeper_runs_it_once(s, approval)


def test_a_card_update_failing_after_approval_neither_blocks_nor_repeats_the_run(scenario: Scenario) -> None:
    s = scenario
    approval = proposed(s, quorum=1)  # one click decides: no other redraw is in flight
    # Every chat.update fails for a while: the click's redraw and the outcome's redraw both give up. Each
    # redraw updates every copy of the card (the thread's, and bob's and carol's DMs), so 8 per copy.
    assert len(approval.cards) == 3
    s.world.slack.fail_next("chat.update", status=503, times=8 * len(approval.cards))
    s.click("U0CAROL", approval)
    wait_until("the click's redraw to give up", lambda: s.redis.sismember("chatops:cards-dirty", approval.id))
    s.work()  # the run does not wait for the card; its own redraw fails as well
    assert s.approval(approval.id).status == Status.SUCCEEDED
    assert kills(s) == 1
    assert s.redis.sismember("chatops:cards-dirty", approval.id)
    card = s.world.slack.message(CHANNEL, s.card_ts(approval))
    assert card is not None
    assert any(b["type"] == "actions" for b in card.blocks)  # still the stale card with buttons
    sweep_now(s)
    s.work()
    card = s.world.slack.message(CHANNEL, s.card_ts(approval))
    assert card is not None
    assert not any(b["type"] == "actions" for b in card.blocks)  # redrawn as decided
    assert kills(s) == 1


def test_a_worker_killed_after_the_side_effect_never_runs_it_again(scenario: Scenario) -> None:
    s = scenario
    approval = proposed(s)
    presto = s.world.servers["presto"]
    performed = presto.ledger.signal_after("kill_query", hold=True)
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env, start_new_session=True)
    try:
        s.click("U0BOB", approval)
        s.click("U0CAROL", approval)
        assert performed.wait(30), "the worker never reached the side effect"
        kill_worker(worker)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        presto.ledger.release()
    assert kills(s) == 1
    assert presto.ledger.entries()[0]["key"] == approval.id  # the idempotency key travelled with the call
    assert s.approval(approval.id).status == Status.RUNNING
    # The lease passes; the sweep reports it; a re-enqueued job (RQ cleanup, a sweeper) finds nothing to run.
    s.redis.zadd("chatops:approvals:running", {approval.id: time.time() - 1})
    s.redis.hset(f"chatops:approval:{approval.id}", "lease_until", json.dumps(time.time() - 1))
    sweep_now(s)
    s.work()
    Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_action(approval.id)
    s.redis.delete(f"rq:job:exec-{approval.id}")
    Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_action(approval.id)
    s.work()
    assert s.approval(approval.id).status == Status.OUTCOME_UNKNOWN
    assert kills(s) == 1
    assert len(presto.record.tool_calls("kill_query")) == 1
    assert "outcome is unknown" in thread_text(s, approval)


def test_an_expired_requester_token_that_cannot_refresh_fails_without_borrowing_the_approvers(
    scenario: Scenario,
) -> None:
    s = scenario
    approval = proposed(s)
    s.click("U0BOB", approval)
    for key in s.redis.scan_iter(match="chatops:tok:*:U0ALICE:*"):
        s.redis.delete(key)  # alice's cached access tokens have expired
    s.world.idp.fail_next(20, error="invalid_grant", grant_type="refresh_token")
    s.world.servers["presto"].record.clear()
    s.click("U0CAROL", approval)
    s.work()
    final = s.approval(approval.id)
    assert final.status == Status.FAILED
    assert "link has ended" in final.outcome_detail
    assert kills(s) == 0
    presto = s.world.servers["presto"].record.all()
    assert {r.sub for r in presto} <= {"u-alice"}  # never bob's or carol's token
    told = " ".join(s.told("U0ALICE", CHANNEL))
    assert "Connect again" in told


def lapse(s: Scenario, approval: Approval) -> None:
    """As if the action's lease had run out while its call was still going (a call longer than a lease)."""
    s.redis.zadd(RUNNING_KEY, {approval.id: time.time() - 1})
    s.redis.hset(f"chatops:approval:{approval.id}", "lease_until", repr(time.time() - 1))


def lease_until(s: Scenario, approval: Approval) -> float:
    return float(s.redis.hget(f"chatops:approval:{approval.id}", "lease_until") or 0)


def worker_with_short_leases(s: Scenario) -> subprocess.Popen[bytes]:
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1", "CHATOPS_TURN_LEASE_SECONDS": "3"}
    return subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env, start_new_session=True)


def test_a_call_that_outlives_its_lease_keeps_running_while_its_worker_lives(scenario: Scenario) -> None:
    s = scenario
    approval = proposed(s, quorum=1)
    presto = s.world.servers["presto"]
    entered = presto.knobs.hang("kill_query")  # the server holds the call, before any side effect
    worker = worker_with_short_leases(s)
    try:
        s.click("U0CAROL", approval)
        assert entered.wait(30), "the worker never called the server"
        lapse(s, approval)
        wait_until("the live worker to renew the lease", lambda: lease_until(s, approval) > time.time())
        sweep_now(s)
        s.work()  # the sweep, in this process, while the worker still waits on the server
        assert s.approval(approval.id).status == Status.RUNNING
        presto.knobs.release("kill_query")
        wait_until("the call to finish", lambda: s.approval(approval.id).status == Status.SUCCEEDED, 30)
    finally:
        presto.knobs.release()
        kill_worker(worker)
    assert kills(s) == 1
    assert "outcome is unknown" not in thread_text(s, approval)


def test_an_action_whose_worker_dies_still_ends_outcome_unknown_when_its_lease_lapses(
    scenario: Scenario,
) -> None:
    s = scenario
    approval = proposed(s, quorum=1)
    presto = s.world.servers["presto"]
    entered = presto.knobs.hang("kill_query")
    worker = worker_with_short_leases(s)
    try:
        s.click("U0CAROL", approval)
        assert entered.wait(30), "the worker never called the server"
        kill_worker(worker)
    finally:
        if worker.poll() is None:
            kill_worker(worker)
        presto.knobs.release()
    wait_until("its lease to lapse", lambda: s.redis.zrangebyscore(RUNNING_KEY, "-inf", time.time()) or None)
    sweep_now(s)
    s.work()
    assert s.approval(approval.id).status == Status.OUTCOME_UNKNOWN
    assert kills(s) <= 1  # the call had reached the server: whether it acted is what is unknown
    assert "outcome is unknown" in thread_text(s, approval)


def test_a_registry_outage_after_the_action_started_ends_it_failed_and_nothing_ran(
    scenario: Scenario,
) -> None:
    s = scenario
    approval = proposed(s, quorum=1)
    s.click("U0CAROL", approval)  # approved and queued; the worker has not taken it yet
    s.world.registry.fail_with(503)
    s.redis.delete(SNAPSHOT_KEY, VERSION_KEY, ATTEMPT_KEY)  # and no copy is left that may serve
    s.work()
    final = s.approval(approval.id)
    assert final.status == Status.FAILED
    assert final.outcome_detail == REGISTRY_DOWN
    assert kills(s) == 0
    assert s.world.servers["presto"].record.tool_calls("kill_query") == []
    thread = thread_text(s, approval)
    assert REGISTRY_DOWN in thread
    assert "outcome is unknown" not in thread
