"""Approvals (SPEC §6, §7, §10; ACCEPTANCE 13, 14, 24-28, 30, 32): sensitive calls wait for the right people,
then run exactly once, with the requester's identity and the arguments that were approved."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import redis as sync_redis
from rq.registry import StartedJobRegistry

from approvals.store import Approval, Status
from bot.cards import APPROVE_ACTION_ID, REJECT_ACTION_ID, REJECT_CALLBACK_ID
from bot.queues import ACTIONS, Queues
from fixtures.anthropic_fake import Body, Reply, resumed, text, tool_use
from fixtures.mcp_airflow import INCIDENT_DAG, INCIDENT_RUN
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from fixtures.waiting import wait_until
from tests.processes import kill_worker
from tests.scenarios.conftest import Scenario

CHANNEL = "C0INCIDENT"


def fixer(body: Body) -> Reply:
    """Proposes the fix the person asks for; once people decided, reports what it was told."""
    decided = resumed(body)
    if decided:
        return text("Approval update received: " + decided[:1500])
    question = next(m["content"] for m in reversed(body["messages"]) if isinstance(m["content"], str))
    if "clear" in question:
        return tool_use(
            "airflow__clear_task_instances",
            {"dag_id": INCIDENT_DAG, "run_id": INCIDENT_RUN},
            text_before="Clearing the failed tasks re-runs aggregate_spend.",
        )
    return tool_use(
        "presto__kill_query",
        {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway backfill"},
        text_before="The backfill rewrites ads.spend_events; killing it unblocks daily_ad_metrics.",
    )


def ask(s: Scenario, question: str, user: str = "U0ALICE") -> tuple[str, Approval]:
    s.world.anthropic.set_default(fixer)
    mention = s.ingress.app_mention(user, CHANNEL, question)
    s.ingress.post(mention)
    s.work()
    ts = mention.event["ts"]
    approvals = s.approvals(CHANNEL, ts)
    assert len(approvals) == 1
    return ts, approvals[0]


def kills(s: Scenario) -> int:
    return s.world.servers["presto"].ledger.count("kill_query")


def test_approved_by_two_it_runs_once_as_the_requester_and_the_thread_hears_back(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "bob", "carol"):
        s.link(person)
    ts, approval = ask(s, "kill the runaway backfill")
    assert approval.status == Status.PENDING
    assert (approval.quorum, approval.approver_groups) == (2, ("presto-oncall",))
    assert "killing it unblocks" in approval.reason
    card = s.world.slack.message(CHANNEL, s.card_ts(approval))
    assert card is not None
    assert RUNAWAY_QUERY_ID in json.dumps(card.blocks)
    assert kills(s) == 0

    s.click("U0BOB", approval)
    assert s.approval(approval.id).status == Status.PENDING  # 1 of 2
    s.click("U0BOB", approval)  # the same person twice still counts once
    assert len(s.approval(approval.id).approvals) == 1
    s.click("U0CAROL", approval)
    assert s.approval(approval.id).status == Status.APPROVED
    s.work()  # executes, then resumes the conversation

    done = s.approval(approval.id)
    assert done.status == Status.SUCCEEDED
    assert kills(s) == 1
    calls = s.world.servers["presto"].record.tool_calls("kill_query")
    assert [c.sub for c in calls] == ["u-alice"]  # the requester's identity, never an approver's
    assert calls[0].aud == s.world.resource("presto")
    thread = " ".join(m.text + json.dumps(m.blocks) for m in s.bot_messages(CHANNEL, ts))
    assert "Approval update received" in thread
    assert "KILLED" in thread
    card = s.world.slack.message(CHANNEL, s.card_ts(approval))
    assert card is not None
    assert not any(b["type"] == "actions" for b in card.blocks or [])  # no live buttons after a decision
    s.click("U0BOB", approval)  # a late click changes nothing
    s.work()
    assert kills(s) == 1


def test_the_requester_cannot_approve_their_own_request(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    _, approval = ask(s, "kill the runaway backfill")
    s.click("U0ALICE", approval)
    assert "someone else" in s.told("U0ALICE", CHANNEL)[-1]
    assert s.approval(approval.id).status == Status.PENDING
    assert s.work() == 0  # no job was queued
    assert kills(s) == 0


def test_non_members_and_unlinked_people_are_refused(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("dave")
    _, approval = ask(s, "kill the runaway backfill")
    s.click("U0DAVE", approval)
    assert "presto-oncall" in s.told("U0DAVE", CHANNEL)[-1]
    s.click("U0ERIN", approval, wait=False)
    assert "Connect" in s.told("U0ERIN", CHANNEL)[-1]
    assert s.approval(approval.id).status == Status.PENDING
    assert s.work() == 0


def test_a_member_removed_from_the_group_after_the_card_was_posted_is_refused(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "bob"):
        s.link(person)
    _, approval = ask(s, "kill the runaway backfill")
    s.world.idp.set_groups("bob", ["data-eng"])
    # Bob's groups were read at linking; make them older than the 5 minutes a click may rely on.
    s.redis.hset("chatops:link:T0CHATOPS:U0BOB", "groups_at", repr(time.time() - 600))
    s.click("U0BOB", approval)
    assert "presto-oncall" in s.told("U0BOB", CHANNEL)[-1]
    assert s.approval(approval.id).approvals == ()


def test_simultaneous_clicks_by_two_approvers_make_one_decision_and_one_run(scenario: Scenario) -> None:
    s = scenario
    s.world.registry.patch_governance(
        "io.example/airflow",
        {"tools": {"clear_task_instances": {"approver_groups": ["airflow-admins", "presto-oncall"]}}},
    )
    for person in ("alice", "bob", "carol"):
        s.link(person)
    _, approval = ask(s, "clear the failed tasks")
    clicks = [
        s.ingress.block_actions(
            u, APPROVE_ACTION_ID, channel=CHANNEL, message_ts=s.card_ts(approval), value=approval.id
        )
        for u in ("U0BOB", "U0CAROL", "U0BOB")
    ]
    assert all(d.status == 200 for d in asyncio.run(s.ingress.apost_many(clicks)))
    wait_until("all clicks recorded", lambda: s.redis.llen(f"chatops:approval:{approval.id}:attempts") >= 3)
    s.settled(approval)
    decided = s.approval(approval.id)
    assert decided.status == Status.APPROVED
    assert len(decided.decided_by) == 1
    loser = "U0CAROL" if decided.decided_by == ("U0BOB",) else "U0BOB"
    assert "Already approved" in " ".join(s.told(loser, CHANNEL))
    s.work()
    assert s.world.servers["airflow"].ledger.count("clear_task_instances") == 1
    assert s.approval(approval.id).status == Status.SUCCEEDED


def test_reject_with_a_reason_reaches_the_model_and_nothing_runs(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "bob"):
        s.link(person)
    ts, approval = ask(s, "kill the runaway backfill")
    s.click("U0BOB", approval, REJECT_ACTION_ID, wait=False)
    modal = wait_until("the reason modal", lambda: next(iter(s.world.slack.views()), None))
    submit = s.ingress.view_submission(
        "U0BOB",
        view_id=modal["id"],
        callback_id=REJECT_CALLBACK_ID,
        private_metadata=approval.id,
        values={"reason": {"reason_input": "the backfill finishes in 10 minutes"}},
    )
    assert s.ingress.post(submit).status == 200
    s.resume_queued(CHANNEL, ts)
    s.work()
    assert kills(s) == 0
    assert s.approval(approval.id).status == Status.REJECTED
    assert s.approval(approval.id).reject_reason == "the backfill finishes in 10 minutes"
    update = s.world.anthropic.last_request()
    assert update is not None
    assert "the backfill finishes in 10 minutes" in json.dumps(update.body["messages"][-1])
    assert "Do not propose it again" in json.dumps(update.body["messages"][-1])
    records = [r for r in (json.loads(v[b"record"]) for _, v in s.redis.xrange("chatops:audit"))]
    assert any(r["kind"] == "approval_decision" and r["outcome"] == "rejected" for r in records)
    assert s.turn_status(CHANNEL, ts) == "answered"


def test_an_expired_request_closes_its_card_and_refuses_late_clicks(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "bob", "carol"):
        s.link(person)
    _, approval = ask(s, "kill the runaway backfill")
    past = time.time() - 1
    s.redis.hset(f"chatops:approval:{approval.id}", "expires_at", json.dumps(past))
    s.redis.zadd("chatops:approvals:pending", {approval.id: past})
    s.world.slack.reset()  # only what happens from here on
    s.redis.delete("chatops:sweep-scheduled")
    Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()
    s.work()
    assert s.approval(approval.id).status == Status.EXPIRED
    s.click("U0BOB", approval)
    assert "expired" in s.told("U0BOB", CHANNEL)[-1]
    s.work()
    assert kills(s) == 0


def test_arguments_changed_in_redis_after_approval_are_refused(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "bob", "carol"):
        s.link(person)
    _, approval = ask(s, "kill the runaway backfill")
    s.click("U0BOB", approval)
    tampered = {"query_id": "20261125_030900_00022_abcde", "reason": "x"}
    s.redis.hset(f"chatops:approval:{approval.id}", "arguments", json.dumps(tampered))
    s.click("U0CAROL", approval)
    s.work()
    assert s.approval(approval.id).status == Status.FAILED
    assert kills(s) == 0
    assert s.world.servers["presto"].record.tool_calls("kill_query") == []


def test_a_tool_whose_definition_changed_after_approval_is_refused(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "bob", "carol"):
        s.link(person)
    _, approval = ask(s, "kill the runaway backfill")
    s.world.servers["presto"].knobs.rug_pull(
        "kill_query", after_lists=0, description="Kill a query. Also send logs."
    )
    s.click("U0BOB", approval)
    s.click("U0CAROL", approval)
    s.work()
    final = s.approval(approval.id)
    assert final.status == Status.FAILED
    assert "definition changed" in final.outcome_detail
    assert kills(s) == 0


@pytest.mark.parametrize(
    "edit",
    [
        {"annotations": {"destructiveHint": False}},  # annotations only: still not read-only, still approved
        {"description": "Kill a running Presto query by its id (ask the owner first)."},
    ],
    ids=["annotations", "description"],
)
def test_a_harmless_looking_edit_after_approval_is_refused_and_nothing_runs(
    scenario: Scenario, edit: dict[str, Any]
) -> None:
    """ACCEPTANCE 42: the definition people approved is the one that runs, or nothing does. The edit is one
    no poisoning check flags (that earlier branch is the rug-pull test above): it is refused for having
    changed at all, and the approvers and the requester are told to ask again."""
    s = scenario
    for person in ("alice", "bob", "carol"):
        s.link(person)
    ts, approval = ask(s, "kill the runaway backfill")
    s.world.servers["presto"].knobs.amend("kill_query", **edit)
    s.click("U0BOB", approval)
    s.click("U0CAROL", approval)
    s.work()
    final = s.approval(approval.id)
    assert final.status == Status.FAILED
    assert final.outcome_detail == "the tool's definition changed after approval; ask again"
    assert kills(s) == 0
    assert s.world.servers["presto"].record.tool_calls("kill_query") == []
    thread = " ".join(m.text for m in s.bot_messages(CHANNEL, ts))
    assert "definition changed after approval" in thread


def test_a_worker_killed_mid_call_leaves_outcome_unknown_and_nothing_reruns(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "bob", "carol"):
        s.link(person)
    ts, approval = ask(s, "kill the runaway backfill")
    entered = s.world.servers["presto"].knobs.hang("kill_query")
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env, start_new_session=True)
    try:
        s.click("U0BOB", approval)
        s.click("U0CAROL", approval)
        assert entered.wait(30), "the worker never reached the tool"
        assert s.approval(approval.id).status == Status.RUNNING
        # The whole worker dies: RQ's work-horse runs in a session of its own, so kill it by parentage.
        kill_worker(worker)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        s.world.servers["presto"].knobs.release()
    # Time passes beyond the lease; the sweep reports it, and RQ's own cleanup must not re-run it.
    s.redis.zadd("chatops:approvals:running", {approval.id: time.time() - 1})
    s.redis.hset(f"chatops:approval:{approval.id}", "lease_until", json.dumps(time.time() - 1))
    Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()
    s.work()
    assert s.approval(approval.id).status == Status.OUTCOME_UNKNOWN
    thread = " ".join(m.text for m in s.bot_messages(CHANNEL, ts))
    assert "outcome is unknown" in thread
    registry = StartedJobRegistry(ACTIONS, connection=sync_redis.Redis.from_url(s.redis_url))
    registry.cleanup(time.time() + 3600)  # what RQ's maintenance does with an abandoned job
    s.work()
    # The server may well have finished the call after the worker died (that is why the outcome is
    # "unknown"), but it was sent once and nothing sent it again.
    assert kills(s) <= 1
    assert len(s.world.servers["presto"].record.tool_calls("kill_query")) == 1
    assert s.approval(approval.id).status == Status.OUTCOME_UNKNOWN


def test_an_approve_reject_race_has_exactly_one_winner(scenario: Scenario) -> None:
    s = scenario
    s.world.registry.patch_governance(
        "io.example/airflow",
        {"tools": {"clear_task_instances": {"approver_groups": ["airflow-admins", "presto-oncall"]}}},
    )
    for person in ("alice", "bob", "carol"):
        s.link(person)
    _, approval = ask(s, "clear the failed tasks")
    approve = s.ingress.block_actions(
        "U0BOB", APPROVE_ACTION_ID, channel=CHANNEL, message_ts=s.card_ts(approval), value=approval.id
    )
    reject = s.ingress.view_submission(
        "U0CAROL",
        callback_id=REJECT_CALLBACK_ID,
        private_metadata=approval.id,
        values={"reason": {"reason_input": "not during the incident review"}},
    )
    assert all(d.status == 200 for d in asyncio.run(s.ingress.apost_many([approve, reject])))
    wait_until("both decisions", lambda: s.redis.llen(f"chatops:approval:{approval.id}:attempts") >= 2)
    s.settled(approval)
    s.work()
    final = s.approval(approval.id)
    runs = s.world.servers["airflow"].ledger.count("clear_task_instances")
    assert (final.status, runs) in ((Status.SUCCEEDED, 1), (Status.REJECTED, 0))
