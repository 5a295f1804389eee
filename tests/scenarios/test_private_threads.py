"""A private-data answer stays private in a shared thread: the next person to ask there does not get it back
through the model (the thread's stored conversation keeps neither the private results nor the answer)."""

from __future__ import annotations

import json
from collections.abc import Callable

from agent.plan import PLAN_TOOL_NAME
from fixtures.anthropic_fake import Body, Reply, last_user_text, text, tool_results, tool_use, tool_uses
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from tests.scenarios.conftest import Scenario

CHANNEL = "C0DATAENG"


def script(body: Body) -> Reply:
    if "which presto queries" in last_user_text(body) and not tool_results(body):
        return tool_use("presto__query_history", {"limit": 5}, text_before="Checking.")
    if tool_results(body):
        return text(f"The runaway one is {RUNAWAY_QUERY_ID}.")
    return text("I can only tell you what this thread already says.")


def alice_asks_a_private_server(s: Scenario, responder: Callable[[Body], Reply]) -> str:
    """Presto marked private_data, alice and bob linked; alice asks in the channel. Her question's ts."""
    s.world.registry.patch_governance("io.example/presto", {"private_data": True})
    s.link("alice")
    s.link("bob")
    s.world.anthropic.set_default(responder)
    first = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    s.ingress.post(first)
    s.work()
    return str(first.event["ts"])


def test_a_private_answer_does_not_reach_the_next_person_in_the_thread(scenario: Scenario) -> None:
    s = scenario
    first_ts = alice_asks_a_private_server(s, script)
    private = s.world.slack.ephemerals(CHANNEL, user="U0ALICE")
    assert any(RUNAWAY_QUERY_ID in m.text + json.dumps(m.blocks) for m in private)  # alice got her answer

    follow_up = s.ingress.app_mention("U0BOB", CHANNEL, "what did it find?", thread_ts=first_ts)
    s.ingress.post(follow_up)
    s.work()
    asked = s.world.anthropic.last_request().body
    seen_by_model = json.dumps(asked["messages"])
    assert "what did it find?" in seen_by_model  # bob's turn did reach the model, with the thread's history
    assert "which presto queries are running?" in seen_by_model
    assert RUNAWAY_QUERY_ID not in seen_by_model
    assert "withheld: private data" in seen_by_model


def planning_script(body: Body) -> Reply:
    """States a plan with its first call, restates it quoting what the private server said, then answers."""
    steps = [{"title": "Running queries", "status": "in_progress"}, {"title": "Explain", "status": "pending"}]
    if "which presto queries" in last_user_text(body) and not tool_results(body):
        first = (PLAN_TOOL_NAME, {"title": "Runaway queries", "steps": steps})
        return tool_uses(first, ("presto__query_history", {"limit": 5}))
    if any(RUNAWAY_QUERY_ID in str(r.get("content")) for r in tool_results(body)):
        steps = [
            {"title": f"Found {RUNAWAY_QUERY_ID}", "status": "complete"},
            {**steps[1], "status": "complete"},
        ]
        return tool_use(PLAN_TOOL_NAME, {"title": "Runaway queries", "steps": steps})
    if tool_results(body):
        return text(f"The runaway one is {RUNAWAY_QUERY_ID}.")
    return text("I can only tell you what this thread already says.")


def test_a_plan_stated_after_private_data_is_neither_streamed_nor_remembered_for_the_thread(
    scenario: Scenario,
) -> None:
    s = scenario
    first_ts = alice_asks_a_private_server(s, planning_script)
    streamed = [c.args for c in s.world.slack.calls() if "Stream" in c.method]
    assert "Runaway queries" in json.dumps(streamed)  # the plan stated before the private call showed
    assert RUNAWAY_QUERY_ID not in json.dumps(streamed)  # the one written after it did not

    follow_up = s.ingress.app_mention("U0BOB", CHANNEL, "what did it find?", thread_ts=first_ts)
    s.ingress.post(follow_up)
    s.work()
    seen_by_model = json.dumps(s.world.anthropic.last_request().body["messages"])
    assert "what did it find?" in seen_by_model
    assert RUNAWAY_QUERY_ID not in seen_by_model
