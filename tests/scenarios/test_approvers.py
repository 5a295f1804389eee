"""Approvals reach the people who can give them, and the requester stays in control (SPEC §7, issue 18):
the card by DM to every linked person who may approve (and to the registry's `approvals_channel`), clicks
from a DM under the same rules, a reminder at half the TTL given once however many workers sweep, the
`escalation_channel` late, "nobody eligible" said at once, and Withdraw for the requester."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from rq import Queue
from rq.serializers import JSONSerializer

from approvals.reminders import REMINDERS_KEY
from approvals.store import Approval, Status
from bot.cards import APPROVE_ACTION_ID, WITHDRAW_ACTION_ID
from bot.queues import ACTIONS, SWEEP_JOB
from fixtures.mcp_airflow import INCIDENT_DAG
from fixtures.slack import Message
from fixtures.waiting import wait_until
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_approvals import CHANNEL, ask, kills
from tests.scenarios.test_workflows import runs

PRESTO = "io.example/presto"


def dm_cards(s: Scenario, user: str, approval: Approval) -> list[Message]:
    """The bot's messages in its DM with `user` that are this approval's card."""
    return [
        m
        for m in s.world.slack.messages("D" + user[1:])
        if m.bot_id and approval.id in json.dumps(m.blocks or [])
    ]


def card(s: Scenario, channel: str, ts: str) -> Message:
    found = s.world.slack.message(channel, ts)
    assert found is not None
    return found


def buttons(message: Message) -> list[str]:
    return [e["action_id"] for b in message.blocks or [] if b["type"] == "actions" for e in b["elements"]]


def click_on(s: Scenario, user: str, approval: Approval, channel: str, ts: str, action: str) -> None:
    before = s.redis.llen(f"chatops:approval:{approval.id}:attempts")
    request = s.ingress.block_actions(user, action, channel=channel, message_ts=ts, value=approval.id)
    assert s.ingress.post(request).status == 200
    wait_until(
        "the click to be recorded",
        lambda: s.redis.llen(f"chatops:approval:{approval.id}:attempts") > before,
    )
    s.settled(approval)


def link_everyone(s: Scenario) -> None:
    for person in ("alice", "bob", "carol", "dave"):
        s.link(person)
    s.link("alice", slack_user="U0ALICE2")  # the requester's second account: the same person


def test_an_eligible_approver_gets_the_dm_and_approves_from_it(scenario: Scenario) -> None:
    s = scenario
    s.world.registry.patch_governance(PRESTO, {"tools": {"kill_query": {"quorum": 1}}})
    link_everyone(s)
    _, approval = ask(s, "kill the runaway backfill")

    # Bob and Carol are in presto-oncall; Dave is not; Alice asked (from either of her accounts).
    assert [len(dm_cards(s, u, approval)) for u in ("U0BOB", "U0CAROL")] == [1, 1]
    assert [dm_cards(s, u, approval) for u in ("U0DAVE", "U0ALICE", "U0ALICE2")] == [[], [], []]
    dm = dm_cards(s, "U0BOB", approval)[0]
    shown = json.dumps(dm.blocks)
    for fact in ("query_id", "runaway backfill", "<@U0ALICE>", "io.example/presto", "kill_query"):
        assert fact in shown
    assert "this thread" in shown  # the permalink to where it was asked
    assert WITHDRAW_ACTION_ID not in buttons(dm)  # only the thread's card has Withdraw
    assert WITHDRAW_ACTION_ID in buttons(card(s, CHANNEL, s.card_ts(approval)))

    click_on(s, "U0BOB", approval, dm.channel, dm.ts, APPROVE_ACTION_ID)
    assert s.approval(approval.id).status == Status.APPROVED
    s.work()
    assert s.approval(approval.id).status == Status.SUCCEEDED
    assert kills(s) == 1
    for message in (card(s, CHANNEL, s.card_ts(approval)), card(s, dm.channel, dm.ts)):
        assert buttons(message) == []
        assert "Approved by <@U0BOB>" in json.dumps(message.blocks)
    click_on(s, "U0CAROL", approval, *_where(dm_cards(s, "U0CAROL", approval)[0]), APPROVE_ACTION_ID)
    s.work()
    assert kills(s) == 1  # a late click from another DM changes nothing


def _where(message: Message) -> tuple[str, str]:
    return message.channel, message.ts


def test_a_quorum_of_two_from_one_dm_and_one_thread_click(scenario: Scenario) -> None:
    s = scenario
    link_everyone(s)
    _, approval = ask(s, "kill the runaway backfill")
    assert approval.quorum == 2
    click_on(s, "U0BOB", approval, *_where(dm_cards(s, "U0BOB", approval)[0]), APPROVE_ACTION_ID)
    assert s.approval(approval.id).status == Status.PENDING
    # Dave sees the thread's card too, but is not an approver: still refused at the click.
    s.click("U0DAVE", approval)
    assert s.approval(approval.id).status == Status.PENDING
    s.click("U0CAROL", approval)
    assert s.approval(approval.id).status == Status.APPROVED
    s.work()
    assert kills(s) == 1
    assert "Approved by <@U0BOB> and <@U0CAROL>" in json.dumps(dm_cards(s, "U0CAROL", approval)[0].blocks)


def test_the_requester_withdraws_before_a_decision(scenario: Scenario) -> None:
    s = scenario
    link_everyone(s)
    ts, approval = ask(s, "kill the runaway backfill")
    s.click("U0BOB", approval, WITHDRAW_ACTION_ID)  # not theirs to withdraw
    assert "Only the person who asked" in s.told("U0BOB", CHANNEL)[-1]
    assert s.approval(approval.id).status == Status.PENDING

    s.click("U0ALICE2", approval, WITHDRAW_ACTION_ID)  # her other account: the same person
    done = s.approval(approval.id)
    assert done.status == Status.WITHDRAWN
    s.resume_queued(CHANNEL, ts)
    s.work()
    thread = " ".join(m.text + json.dumps(m.blocks) for m in s.bot_messages(CHANNEL, ts))
    assert "Withdrawn by the requester" in thread  # the turn resumed and was told
    for message in (card(s, CHANNEL, s.card_ts(approval)), dm_cards(s, "U0BOB", approval)[0]):
        assert buttons(message) == []
        assert "Withdrawn" in json.dumps(message.blocks)
    s.click("U0CAROL", approval)
    s.work()
    assert kills(s) == 0
    audit = [json.loads(f[b"record"]) for _, f in s.redis.xrange("chatops:audit")]
    assert [(r["kind"], r["user"]) for r in audit if r["outcome"] == "withdrawn"] == [
        ("approval_decision", "U0ALICE2"),
        ("approval_withdrawn", "U0ALICE2"),
    ]


def test_a_decision_already_reached_is_not_withdrawn(scenario: Scenario) -> None:
    s = scenario
    s.world.registry.patch_governance(PRESTO, {"tools": {"kill_query": {"quorum": 1}}})
    link_everyone(s)
    _, approval = ask(s, "kill the runaway backfill")
    s.click("U0BOB", approval)
    s.click("U0ALICE", approval, WITHDRAW_ACTION_ID)
    assert "Already approved" in s.told("U0ALICE", CHANNEL)[-1]
    s.work()
    assert s.approval(approval.id).status == Status.SUCCEEDED
    assert kills(s) == 1


def test_nobody_eligible_is_said_at_once(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("dave")  # linked, but not an approver
    ts, approval = ask(s, "kill the runaway backfill")
    said = " ".join(m.text for m in s.bot_messages(CHANNEL, ts))
    assert "Nobody who may approve" in said
    for whom in ("presto-oncall", "data-platform", "#presto-help"):  # who can approve, and whom to ask
        assert whom in said
    assert dm_cards(s, "U0DAVE", approval) == []
    assert s.approval(approval.id).status == Status.PENDING


def sweep_with_two_workers(s: Scenario) -> None:
    """Two sweeps, each in its own `chatops worker --burst` process, running at the same time."""
    queue = Queue(ACTIONS, connection=s.redis, serializer=JSONSerializer)
    for n in (1, 2):
        queue.enqueue_call(SWEEP_JOB, job_id=f"sweep-test-{n}")
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "bot.cli", "worker", "--burst"], env=env) for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0


def test_a_reminder_at_half_the_ttl_once_with_two_workers_and_escalation(scenario: Scenario) -> None:
    s = scenario
    s.world.registry.patch_governance(
        PRESTO, {"approvals_channel": "C0DATAENG", "escalation_channel": "C0RANDOM"}
    )
    link_everyone(s)
    _, approval = ask(s, "kill the runaway backfill")
    in_channel = [m for m in s.world.slack.messages("C0DATAENG") if approval.id in json.dumps(m.blocks or [])]
    assert len(in_channel) == 1  # the registry's approvals_channel got the card
    due = s.redis.zscore(REMINDERS_KEY, f"remind:{approval.id}")
    assert due is not None
    assert abs(due - (approval.created_at + (approval.expires_at - approval.created_at) / 2)) < 1
    # Half the TTL has passed (and three quarters): make the nudges due now.
    s.redis.zadd(
        REMINDERS_KEY, {f"remind:{approval.id}": time.time() - 1, f"escalate:{approval.id}": time.time() - 1}
    )
    sweep_with_two_workers(s)

    reminders = [
        c for c in s.world.slack.calls("chat.update") if "Reminder" in json.dumps(c.args.get("blocks") or [])
    ]
    assert sorted(str(c.args["channel"]) for c in reminders) == ["D0BOB", "D0CAROL"]  # once per DM
    assert len(dm_cards(s, "U0BOB", approval)) == 1  # updated in place, not a new message
    escalated = [m for m in s.world.slack.messages("C0RANDOM") if approval.id in json.dumps(m.blocks or [])]
    assert len(escalated) == 1
    assert APPROVE_ACTION_ID in buttons(escalated[0])

    click_on(s, "U0BOB", approval, *_where(escalated[0]), APPROVE_ACTION_ID)  # decided from the escalation
    s.click("U0CAROL", approval)
    s.work()
    assert kills(s) == 1
    for message in (*in_channel, *escalated, *dm_cards(s, "U0CAROL", approval)):
        assert buttons(card(s, message.channel, message.ts)) == []


def test_operators_list_what_is_pending_with_where_the_cards_are(scenario: Scenario) -> None:
    s = scenario
    s.world.registry.patch_governance(PRESTO, {"approvals_channel": "C0DATAENG"})
    link_everyone(s)
    _, approval = ask(s, "kill the runaway backfill")
    s.click("U0BOB", approval)

    def chatops(*args: str) -> str:
        run = [sys.executable, "-m", "bot.cli", *args]
        done = subprocess.run(run, env={**os.environ, **s.env}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    [row] = [json.loads(line) for line in chatops("approvals", "--json").splitlines()]
    assert (row["id"], row["tool"], row["approvals"], row["quorum"]) == (
        approval.id,
        "presto.kill_query",
        1,
        2,
    )
    assert (row["thread"]["channel"], row["dms"], row["channels"]) == (CHANNEL, 2, ["C0DATAENG"])
    assert row["age_seconds"] >= 0
    table = chatops("approvals")
    assert approval.id in table
    assert "1/2 (presto-oncall)" in table
    s.click("U0CAROL", approval)
    assert "No approval requests are pending." in chatops("approvals")


def test_a_withdrawn_workflow_step_ends_the_run_saying_so(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("bob")
    request = s.ingress.slash_command("U0ALICE", "/oncall", f"run restart-failed-dag dag_id={INCIDENT_DAG}")
    assert s.ingress.post(request).status == 200
    s.runs_queued("U0ALICE")
    s.work()
    (run,) = runs(s, "U0ALICE")
    approval = s.approval(run.approvals[0])
    assert len(dm_cards(s, "U0BOB", approval)) == 1  # bob (airflow-admins) was asked by DM
    s.click("U0ALICE", approval, WITHDRAW_ACTION_ID)
    # The click is handled in the web process, after its ack: a bound for a loaded machine, not a speed.
    wait_until(
        "the run's resumption", lambda: s.redis.exists(f"rq:job:wf-{run.id}-{approval.id}"), timeout=30
    )
    s.work()
    assert s.approval(approval.id).status == Status.WITHDRAWN
    (run,) = runs(s, "U0ALICE")
    assert run.status == "rejected"
    assert "withdrawn by the requester" in run.summary
    assert s.world.servers["airflow"].ledger.count("clear_task_instances") == 0
