"""The model's bill in operation (issue 20 item 4): after a real question, the audit holds the turn's usage as
the Messages API billed it, `chatops stats` and /metrics count it, App Home shows the person their own, and
`doctor` reports the last hour's cache hit ratio."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from agent.plan import PLAN_TOOL_NAME
from agent.usage import Usage
from fixtures.anthropic_fake import text, tool_search, tool_use
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_approvals import CHANNEL, kills
from tests.scenarios.test_doctor import doctor, line
from tests.scenarios.test_home import open_home
from tests.scenarios.test_operating import ask_alice, chatops


def billed(s: Scenario) -> Usage:
    """What the fake Messages API billed, summed over every answered request."""
    total = Usage()
    for request in s.world.anthropic.requests():
        if request.status == 200:
            total += Usage.from_api(request.response["usage"])
    return total


def test_the_turns_usage_is_audited_as_billed_and_counted_everywhere(scenario: Scenario) -> None:
    s = scenario
    ask_alice(s)
    sent = billed(s)
    assert sent.prompt > 0
    assert sent.output > 0

    records = [json.loads(x) for x in chatops(s, "audit", "export", "--user", "U0ALICE").splitlines()]
    [usage] = [r for r in records if r["kind"] == "model_usage"]
    assert usage["usage"] == sent.as_dict()
    assert usage["server"] == "io.example/presto"
    assert usage["sub"] == "u-alice"

    out = chatops(s, "stats")
    by_server = out.split("Model usage by server", 1)[1].split("\n\n", 1)[0]
    [presto] = [x.split() for x in by_server.splitlines() if "io.example/presto" in x]
    assert presto[2] == "1"  # month, server, turns
    assert presto[6] == f"{sent.output:,}"

    families = {f.name: f for f in text_string_to_metric_families(httpx2.get(f"{s.web.url}/metrics").text)}
    tokens = {x.labels["kind"]: x.value for x in families["chatops_model_billed_tokens"].samples}
    assert tokens.get("output") == sent.output
    assert (
        tokens.get("cache_read", 0) + tokens.get("cache_write_5m", 0) + tokens.get("input", 0) == sent.prompt
    )

    home = json.dumps(open_home(s, "U0ALICE"))
    assert "Your model usage this month" in home
    assert f"{sent.prompt + sent.output:,} tokens" in home

    report = line(doctor(s), "model cache")
    assert report.startswith("ok ")
    assert "of the input of 1 turns in the last hour was read from the cache" in report


def test_a_tool_found_by_search_goes_through_every_rule_of_the_gateway(scenario: Scenario) -> None:
    """Past the threshold every tool is deferred; the model searches, finds kill_query and calls it: the
    real gateway still makes it an approval card for presto-oncall, nothing runs before two approve, and
    then it runs once as the requester."""
    s = replace(scenario, settings=scenario.settings.model_copy(update={"tool_search_threshold": 2}))
    for person in ("alice", "bob", "carol"):
        s.link(person)
    kill = tool_use(
        "presto__kill_query",
        {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway backfill"},
        text_before="Killing the runaway query unblocks the DAG.",
    )
    s.world.anthropic.enqueue(tool_search("presto kill query", bm25=True, then=kill))
    s.world.anthropic.set_default(lambda body: text("Approval update received."))
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "kill the runaway backfill")
    assert s.ingress.post(mention).status == 200
    s.work()

    first = s.world.anthropic.requests()[0].body
    assert first["tools"][0]["name"] == "tool_search_tool_bm25"
    servers_tools = [t for t in first["tools"][1:] if t["name"] != PLAN_TOOL_NAME]  # ours: tiny, up front
    assert servers_tools
    assert all(t.get("defer_loading") is True for t in servers_tools)
    [approval] = s.approvals(CHANNEL, mention.event["ts"])
    assert (approval.tool, approval.quorum, approval.approver_groups) == ("kill_query", 2, ("presto-oncall",))
    assert kills(s) == 0
    s.click("U0BOB", approval)
    assert kills(s) == 0  # one approval of two
    s.click("U0CAROL", approval)
    s.work()
    assert kills(s) == 1
    [call] = s.world.servers["presto"].record.tool_calls("kill_query")
    assert call.sub == "u-alice"
