"""A private-data answer stays private in a shared thread: the next person to ask there does not get it back
through the model (the thread's stored conversation keeps neither the private results nor the answer)."""

from __future__ import annotations

import json

from fixtures.anthropic_fake import Body, Reply, last_user_text, text, tool_results, tool_use
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from tests.scenarios.conftest import Scenario

CHANNEL = "C0DATAENG"


def script(body: Body) -> Reply:
    if "which presto queries" in last_user_text(body) and not tool_results(body):
        return tool_use("presto__query_history", {"limit": 5}, text_before="Checking.")
    if tool_results(body):
        return text(f"The runaway one is {RUNAWAY_QUERY_ID}.")
    return text("I can only tell you what this thread already says.")


def test_a_private_answer_does_not_reach_the_next_person_in_the_thread(scenario: Scenario) -> None:
    s = scenario
    s.world.registry.patch_governance("io.example/presto", {"private_data": True})
    s.link("alice")
    s.link("bob")
    s.world.anthropic.set_default(script)
    first = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    s.ingress.post(first)
    s.work()
    private = s.world.slack.ephemerals(CHANNEL, user="U0ALICE")
    assert any(RUNAWAY_QUERY_ID in m.text + json.dumps(m.blocks) for m in private)  # alice got her answer

    follow_up = s.ingress.app_mention("U0BOB", CHANNEL, "what did it find?", thread_ts=first.event["ts"])
    s.ingress.post(follow_up)
    s.work()
    asked = s.world.anthropic.last_request().body
    seen_by_model = json.dumps(asked["messages"])
    assert "what did it find?" in seen_by_model  # bob's turn did reach the model, with the thread's history
    assert "which presto queries are running?" in seen_by_model
    assert RUNAWAY_QUERY_ID not in seen_by_model
    assert "withheld: private data" in seen_by_model
