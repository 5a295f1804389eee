"""A paused turn resumes with its calls' real results (issue 15; pydantic-ai's deferred tools): the model
reads what the approved action returned as the tool_result of the call it made, in the paused step, not a
narrated update; a thread that moved on meanwhile keeps every turn where it was."""

from __future__ import annotations

import json
from typing import Any

from agent.deferred import MOVED_ON, WAITING
from agent.plan import PLAN_TOOL_NAME
from approvals.store import Approval, Status
from approvals.turns import thread_key
from fixtures.anthropic_fake import Body, Reply, resumed, text, tool_results, tool_use, tool_uses
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from fixtures.slack import TEAM_ID
from tests.faults.conftest import proposed_kill, with_services
from tests.scenarios.conftest import Scenario

CHANNEL = "C0INCIDENT"
_REGION = '<tool_output server="io.example/presto" tool="kill_query" trust="untrusted-data">\n'


def killer(body: Body) -> Reply:
    """Proposes the kill; once people decided, says so; answers other questions in the thread plainly."""
    if resumed(body):
        return text("Told what became of the kill.")
    if tool_results(body):
        return text("Noted the placeholder.")
    question = next(m["content"] for m in reversed(body["messages"]) if isinstance(m["content"], str))
    if "kill" not in question:
        return text("Spark is fine.")
    return tool_use(
        "presto__kill_query",
        {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway backfill"},
        text_before="Killing the runaway backfill unblocks daily_ad_metrics.",
    )


def proposed(s: Scenario) -> tuple[str, Approval]:
    approval = proposed_kill(s, killer)
    return approval.thread_ts, approval


def approve(s: Scenario, approval: Approval) -> None:
    s.click("U0BOB", approval)
    s.click("U0CAROL", approval)
    s.work()
    assert s.approval(approval.id).status == Status.SUCCEEDED


def result_of(messages: list[dict[str, Any]], tool_use_id: str) -> tuple[int, dict[str, Any]]:
    """Where the result of one call stands in a transcript, and the block itself."""
    found = [
        (i, b)
        for i, m in enumerate(messages)
        for b in (m["content"] if isinstance(m["content"], list) else [])
        if b.get("type") == "tool_result" and b.get("tool_use_id") == tool_use_id
    ]
    assert len(found) == 1, found
    return found[0]


def stored(s: Scenario, ts: str) -> list[dict[str, Any]]:
    raw = s.redis.get(f"chatops:conv:{thread_key(TEAM_ID, CHANNEL, ts)}")
    assert raw is not None
    return list(json.loads(raw)["messages"])


def test_the_resumed_model_reads_the_actions_real_result_as_its_calls_tool_result(scenario: Scenario) -> None:
    s = scenario
    ts, approval = proposed(s)
    paused = s.world.anthropic.last_request().body["messages"]
    at, placeholder = result_of(stored(s, ts), approval.tool_use_id)
    assert placeholder["content"] == WAITING  # the thread stays a valid conversation while people decide

    approve(s, approval)
    sent = s.world.anthropic.last_request().body["messages"]
    assert len(sent) == len(paused) + 2  # the proposing step and its results: nothing narrated after them
    index, block = result_of(sent, approval.tool_use_id)
    assert index == len(sent) - 1 == at
    assert block["is_error"] is False
    assert block["content"].startswith("Approved by <@U0BOB>, <@U0CAROL> and run. Its output:\n" + _REGION)
    assert "KILLED" in block["content"]
    assert "Update from the approval system" not in json.dumps(sent)

    memory = stored(s, ts)
    assert result_of(memory, approval.tool_use_id) == (at, block)  # the memory keeps the real result in place
    assert "Told what became of the kill." in json.dumps(memory[-1])
    thread = " ".join(m.text + json.dumps(m.blocks) for m in s.bot_messages(CHANNEL, ts))
    assert "Told what became of the kill." in thread


def test_a_thread_that_moved_on_keeps_its_turns_and_gets_the_result_in_place_and_a_note(
    scenario: Scenario,
) -> None:
    s = scenario
    ts, approval = proposed(s)
    reply = s.ingress.message("U0CAROL", CHANNEL, "meanwhile, is spark ok?", thread_ts=ts)
    s.ingress.post(reply)
    s.work()
    asked = s.world.anthropic.last_request().body["messages"]
    _, waiting = result_of(asked, approval.tool_use_id)
    assert waiting["content"] == WAITING  # carol's turn ran over the placeholder, valid for the API
    assert "Spark is fine." in " ".join(m.text + json.dumps(m.blocks) for m in s.bot_messages(CHANNEL, ts))

    approve(s, approval)
    sent = s.world.anthropic.last_request().body["messages"]
    at, block = result_of(sent, approval.tool_use_id)
    assert "KILLED" in block["content"]
    assert sent[at + 1]["content"].endswith("meanwhile, is spark ok?")  # carol's turn still follows it
    assert "Spark is fine." in json.dumps(sent[at + 2])
    assert sent[-1] == {"role": "user", "content": MOVED_ON}  # the decisions are the newest thing read
    assert "Update from the approval system" not in json.dumps(sent)


def test_a_turn_whose_requester_disconnected_meanwhile_says_so_instead_of_resuming(
    scenario: Scenario,
) -> None:
    s = scenario
    ts, approval = proposed(s)
    asked = len(s.world.anthropic.requests())
    with_services(s, lambda svc: svc.broker.unlink(TEAM_ID, "U0ALICE"))
    s.click("U0BOB", approval)
    s.click("U0CAROL", approval)
    s.work()
    assert s.approval(approval.id).status == Status.FAILED  # nothing runs as a person who is not linked
    assert s.world.servers["presto"].ledger.count("kill_query") == 0
    assert len(s.world.anthropic.requests()) == asked  # the turn does not go on without its person
    thread = " ".join(m.text + json.dumps(m.blocks) for m in s.bot_messages(CHANNEL, ts))
    assert "I can't continue: your account link has ended. Connect again and ask me." in thread


PLAN = {
    "title": "Unblock daily_ad_metrics",
    "steps": [
        {"title": "Kill the runaway backfill", "status": "in_progress"},
        {"title": "Confirm", "status": "pending"},
    ],
}


def planned_killer(body: Body) -> Reply:
    """States a plan with the kill (which waits for approval); resumed, answers."""
    if resumed(body):
        return text("Told what became of the kill.")
    return tool_uses(
        (PLAN_TOOL_NAME, PLAN),
        ("presto__kill_query", {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway backfill"}),
        text_before="Killing the runaway backfill unblocks daily_ad_metrics.",
    )


def test_a_turn_resumed_after_approval_shows_the_plan_it_had_stated(scenario: Scenario) -> None:
    """The resumed turn answers in a new message: it shows the plan again, the step that waited on the
    approval complete once it answered, instead of losing it with the paused message."""
    s = scenario
    approval = proposed_kill(s, planned_killer)
    ts = approval.thread_ts
    (paused,) = [m for m in s.bot_messages(CHANNEL, ts) if m.chunks]  # the stream (the card is another)
    assert paused.plan_title() == "Unblock daily_ad_metrics"

    approve(s, approval)
    [answer] = [m for m in s.bot_messages(CHANNEL, ts) if "Told what became" in m.text + json.dumps(m.blocks)]
    assert answer.ts != paused.ts
    assert answer.plan_title() == "Unblock daily_ad_metrics"
    tasks = answer.tasks()
    assert [(tasks[i]["title"], tasks[i]["status"]) for i in ("plan-1", "plan-2")] == [
        ("Kill the runaway backfill", "complete"),
        ("Confirm", "pending"),
    ]
    assert len(s.world.anthropic.requests()) == 2  # shown from the transcript: no model call to restate it
