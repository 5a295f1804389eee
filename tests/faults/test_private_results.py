"""Secrets and private data in tool results (ACCEPTANCE 23): keys are redacted before anything reaches Slack
or the audit, and a server marked `private_data` answers the requester alone."""

from __future__ import annotations

import json

from fixtures.anthropic_fake import Body, Reply, text, tool_results, tool_use
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from tests.faults.conftest import Scenario

CHANNEL = "C0DATAENG"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
A_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdmMtZXRsIn0.dGhpcy1pcy1hLXNpZ25hdHVyZQ"
LEAKY = f"debug: aws_access_key_id={AWS_KEY} session={A_JWT}"


def echo(name: str, arguments: dict[str, object]) -> object:
    """Calls the tool, then repeats its output verbatim (what a naive model would do)."""

    def script(body: Body) -> Reply:
        results = tool_results(body)
        update = "[Update from the approval system" in json.dumps(body["messages"][-1])
        if results or update:
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
    for person in ("alice", "bob", "carol"):
        s.link(person)
    s.world.servers["presto"].knobs.inject("kill_query", LEAKY)
    s.world.anthropic.set_default(
        echo("presto__kill_query", {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway backfill"})
    )
    mention = s.ingress.app_mention("U0ALICE", "C0INCIDENT", "kill the runaway backfill")
    s.ingress.post(mention)
    s.work()
    (approval,) = s.approvals("C0INCIDENT", mention.event["ts"])
    s.click("U0BOB", approval)
    s.click("U0CAROL", approval)
    s.work()
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
    assert "answered <@U0ALICE> privately" in in_channel
    private = s.world.slack.ephemerals(CHANNEL, user="U0ALICE")
    assert any(RUNAWAY_QUERY_ID in m.text + json.dumps(m.blocks) for m in private)
    assert all(m.ephemeral_to == "U0ALICE" for m in s.world.slack.ephemerals(CHANNEL))
