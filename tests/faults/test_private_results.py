"""Secrets and private data in tool results (ACCEPTANCE 23): keys are redacted before anything reaches Slack
or the audit, and a server marked `private_data` answers the requester alone."""

from __future__ import annotations

import json

from approvals.turns import thread_key
from fixtures.anthropic_fake import Body, Reply, resumed, text, tool_results, tool_use
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from fixtures.slack import TEAM_ID
from tests.faults.conftest import Scenario, approved_kill

CHANNEL = "C0DATAENG"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
A_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdmMtZXRsIn0.dGhpcy1pcy1hLXNpZ25hdHVyZQ"
LEAKY = f"debug: aws_access_key_id={AWS_KEY} session={A_JWT}"


def echo(name: str, arguments: dict[str, object]) -> object:
    """Calls the tool, then repeats its output verbatim (what a naive model would do)."""

    def script(body: Body) -> Reply:
        results = tool_results(body)
        if results or resumed(body):
            return text("Here is what it returned:\n" + json.dumps(results or body["messages"][-1])[:3000])
        return tool_use(name, arguments, text_before="Checking.")

    return script


def leaks(blob: str) -> list[str]:
    return [s for s in (AWS_KEY, A_JWT) if s in blob]


def test_keys_in_tool_output_are_redacted_in_the_answer_and_the_audit(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.servers["presto"].knobs.inject("query_history", LEAKY)
    s.world.anthropic.set_default(echo("presto__query_history", {"limit": 5}))
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    s.ingress.post(mention)
    s.work()
    answer = json.dumps([m.text + json.dumps(m.blocks) for m in s.bot_messages(CHANNEL, mention.event["ts"])])
    assert RUNAWAY_QUERY_ID in answer  # the answer itself arrived
    assert "[redacted]" in answer
    assert leaks(answer) == []
    assert leaks(json.dumps([c.args for c in s.world.slack.calls()])) == []
    assert leaks(repr(s.redis.xrange("chatops:audit"))) == []


def test_keys_in_an_approved_actions_output_are_redacted_in_the_thread(scenario: Scenario) -> None:
    s = scenario
    s.world.servers["presto"].knobs.inject("kill_query", LEAKY)
    approval = approved_kill(
        s, echo("presto__kill_query", {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway backfill"})
    )
    assert s.world.servers["presto"].ledger.count("kill_query") == 1
    thread = json.dumps(
        [m.text + json.dumps(m.blocks) for m in s.bot_messages("C0INCIDENT", approval.thread_ts)]
    )
    assert "ran:" in thread
    assert leaks(thread) == []
    assert leaks(json.dumps([c.args for c in s.world.slack.calls()])) == []
    assert leaks(repr(s.redis.xrange("chatops:audit"))) == []


def test_a_private_data_servers_results_reach_only_the_requester(scenario: Scenario) -> None:
    s = scenario
    s.world.registry.patch_governance("io.example/presto", {"private_data": True})
    s.link("alice")
    s.world.anthropic.set_default(echo("presto__query_history", {"limit": 5}))
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    s.ingress.post(mention)
    s.work()
    in_channel = json.dumps([m.text + json.dumps(m.blocks) for m in s.world.slack.messages(CHANNEL)])
    assert RUNAWAY_QUERY_ID not in in_channel
    # Nor while it was written: words after a private_data call are not streamed into the thread.
    streamed = [c.args for c in s.world.slack.calls() if c.method.endswith("Stream")]
    assert streamed
    assert RUNAWAY_QUERY_ID not in json.dumps(streamed)
    assert "answered <@U0ALICE> privately" in in_channel
    private = s.world.slack.ephemerals(CHANNEL, user="U0ALICE")
    assert any(RUNAWAY_QUERY_ID in m.text + json.dumps(m.blocks) for m in private)
    assert all(m.ephemeral_to == "U0ALICE" for m in s.world.slack.ephemerals(CHANNEL))


PRIVATE_OUTPUT = "only-for-alice-7f3a"


def kill_then_report(body: Body) -> Reply:
    """Proposes the kill; repeats whatever it is told of the decision (a naive model); answers follow-ups."""
    said = json.dumps(body["messages"][-1])
    if resumed(body):
        return text("It ran. What I was told:\n" + said[:3000])
    if "what did the kill return" in said:
        return text(
            "I can only tell you what this thread's history says: " + json.dumps(body["messages"])[-3000:]
        )
    return tool_use(
        "presto__kill_query",
        {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway backfill"},
        text_before="Killing the runaway backfill.",
    )


def test_an_approved_action_on_a_private_data_server_reports_to_the_requester_alone(
    scenario: Scenario,
) -> None:
    s = scenario
    s.world.registry.patch_governance("io.example/presto", {"private_data": True})
    s.settings = s.settings.model_copy(update={"approvals_channel": "C0APPROVALS"})  # cards are mirrored
    s.world.servers["presto"].knobs.inject("kill_query", PRIVATE_OUTPUT)
    approval = approved_kill(s, kill_then_report)
    assert s.world.servers["presto"].ledger.count("kill_query") == 1
    assert PRIVATE_OUTPUT in json.dumps(s.world.anthropic.last_request().body)  # the model did read it

    # The requester got the result and the answer built on it, privately.
    to_alice = [m.text + json.dumps(m.blocks) for m in s.world.slack.ephemerals("C0INCIDENT", user="U0ALICE")]
    assert any(PRIVATE_OUTPUT in m and "kill_query" in m and "ran" in m for m in to_alice)  # the result
    assert any(PRIVATE_OUTPUT in m and "What I was told" in m for m in to_alice)  # the resumed turn's answer
    assert all(
        m.ephemeral_to == "U0ALICE"
        for m in s.world.slack.ephemerals()
        if PRIVATE_OUTPUT in m.text + json.dumps(m.blocks)
    )
    # Nobody else saw it: not in the thread, not on any card, not in the mirror channel, not in the approvers'
    # DMs (the card is pushed to bob and carol, who may approve it).
    public = {
        c: [m.text + json.dumps(m.blocks) for m in s.world.slack.messages(c)]
        for c in ("C0INCIDENT", "C0APPROVALS", "D0BOB", "D0CAROL")
    }
    assert [m for shown in public.values() for m in shown if PRIVATE_OUTPUT in m] == []
    cards = [s.world.slack.message(c.channel, c.ts) for c in s.approval(approval.id).cards]
    assert {c.channel for c in cards if c is not None} == {"C0INCIDENT", "C0APPROVALS", "D0BOB", "D0CAROL"}
    for card in cards:
        assert card is not None
        assert "sent privately to <@U0ALICE>" in json.dumps(card.blocks)
    thread = " ".join(public["C0INCIDENT"])
    assert "result sent privately to <@U0ALICE>" in thread
    assert "answered <@U0ALICE> privately" in thread
    # The thread's memory keeps it from the next person who asks there.
    stored = s.redis.get(f"chatops:conv:{thread_key(TEAM_ID, 'C0INCIDENT', approval.thread_ts)}")
    assert stored is not None
    assert b"kill the runaway backfill" in stored
    assert PRIVATE_OUTPUT.encode() not in stored
    follow_up = s.ingress.app_mention(
        "U0BOB", "C0INCIDENT", "what did the kill return?", thread_ts=approval.thread_ts
    )
    s.ingress.post(follow_up)
    s.work()
    asked = json.dumps(s.world.anthropic.last_request().body["messages"])
    assert "what did the kill return?" in asked
    assert PRIVATE_OUTPUT not in asked
