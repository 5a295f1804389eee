"""ACCEPTANCE 44, hostile neighbours: one registry entry with `remotes: 5` (and others as malformed) and one
server whose `tools/list` carries a tool with `inputSchema: {"type": "string"}` and whose `tools/call` answers
`content: "text"` sit beside the good servers. Both are skipped with reasons; every other server answers;
nothing raises. The hostile server is a raw JSON-RPC fixture (fixtures/mcp_raw.py) in the scenario registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from fixtures.anthropic_fake import Body, Reply, text, tool_results, tool_uses
from fixtures.anthropic_fake import tool_use as use
from fixtures.mcp_raw import GOOD_TOOL, RawMcp, running_raw_mcp
from fixtures.registry import GOVERNANCE, OFFICIAL
from registry_cache.snapshot import ERROR_KEY
from tests.faults.conftest import Scenario, audit_records
from tests.scenarios.test_home import open_home

CHANNEL = "C0INCIDENT"
STRING_SCHEMA = {"name": "bad", "description": "Its schema is a string.", "inputSchema": {"type": "string"}}
WIPE = {"name": "wipe", "description": "Wipe a cache.", "inputSchema": {"type": "object"}}
UPDATE = "[Update from the approval system"


@pytest.fixture(scope="module")
def raw() -> Iterator[tuple[RawMcp, str]]:
    with running_raw_mcp("hostile") as (server, running):
        yield server, f"{running.url}/mcp"


@pytest.fixture
def hostile(scenario: Scenario, raw: tuple[RawMcp, str]) -> Iterator[RawMcp]:
    server, url = raw
    server.reset()
    server.answer("tools/list", {"tools": [GOOD_TOOL, STRING_SCHEMA, WIPE]})
    server.answer("tools/call", {"content": "text"})
    gov = {
        "status": "active",
        "owner_team": "cache",
        "auth": "none",
        "allowed_groups": ["*"],
        "resource": url,
        "approver_groups": ["presto-oncall"],
        "tools": {"wipe": {"approval": "required"}},
    }
    scenario.world.registry.add(
        {
            "server": {
                "name": "io.example/hostile",
                "version": "1.0.0",
                "remotes": [{"type": "streamable-http", "url": url}],
            },
            "_meta": {OFFICIAL: {"status": "active", "isLatest": True}, GOVERNANCE: gov},
        }
    )
    scenario.world.registry.add_poisoned(
        "remotes-not-list", "meta-not-object", "islatest-string", "url-template"
    )
    scenario.world.registry.add("not an entry")  # type: ignore[arg-type]
    yield server
    server.reset()


def investigate(body: Body) -> Reply:
    """Calls presto and the hostile server's echo in one step, then answers from what came back."""
    results = tool_results(body)
    if not results:
        return tool_uses(
            ("presto__query_history", {"limit": 5}),
            ("hostile__echo", {"text": "ping"}),
            text_before="Looking.",
        )
    said = json.dumps(results)
    found = "found" if "20261125_021502_00017_abcde" in said else "missing"
    cache = "unreadable" if "cannot read" in said else "fine"
    return text(f"Presto's runaway query: {found}. The cache server's answer was {cache}.")


def test_a_mention_is_answered_from_a_good_server_beside_a_malformed_entry_and_a_malformed_server(
    scenario: Scenario, hostile: RawMcp
) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(investigate)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "what is presto doing?")
    s.ingress.post(mention)
    s.work()
    answer = " ".join(m.text for m in s.bot_messages(CHANNEL, mention.event["ts"]))
    # presto's own query history reached the person; the cache server's bad answer cost only itself
    assert "runaway query: found. The cache server's answer was unreadable" in answer
    first, second = s.world.anthropic.requests()[-2:]
    offered = [t["name"] for t in first.body["tools"]]
    assert {"presto__query_history", "hostile__echo"} <= set(offered)
    assert "hostile__bad" not in offered
    (echo,) = [r for r in tool_results(second.body) if "hostile" in json.dumps(r.get("content"))]
    assert echo.get("is_error") is True
    assert "content: Input should be a valid list" in json.dumps(echo["content"])
    assert all(r.status == 200 for r in s.world.anthropic.requests())  # the API took every tool it was shown
    assert s.redis.get(ERROR_KEY) is None  # the registry refresh succeeded despite the malformed entries
    withheld = [r for r in audit_records(s.redis) if r["kind"] == "tool_withheld"]
    assert any(r["tool"] == "bad" and "Input should be 'object'" in r["detail"] for r in withheld)
    home = json.dumps(open_home(s, "U0ALICE"))
    assert "Not offered to the assistant" in home
    assert "bad" in home


def propose_wipe(body: Body) -> Reply:
    last = body["messages"][-1]
    if isinstance(last["content"], str) and last["content"].startswith(UPDATE):
        return text("Noted: " + last["content"][:600])
    return use("hostile__wipe", {"target": "sessions"}, text_before="Wiping the session cache.")


def test_an_approved_action_whose_result_is_malformed_is_outcome_unknown_with_the_raw_reason(
    scenario: Scenario, hostile: RawMcp
) -> None:
    s = scenario
    for person in ("alice", "bob"):
        s.link(person)
    s.world.anthropic.set_default(propose_wipe)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "wipe the session cache")
    s.ingress.post(mention)
    s.work()
    (approval,) = s.approvals(CHANNEL, mention.event["ts"])
    s.click("U0BOB", approval)
    s.work()
    done = s.approval(approval.id)
    assert done.status.value == "OUTCOME_UNKNOWN"  # the call was made: never "not run", never re-run
    assert len(hostile.calls("tools/call")) == 1
    thread = " ".join(m.text for m in s.bot_messages(CHANNEL, mention.event["ts"]))
    assert "content: Input should be a valid list" in thread
    records = [r for r in audit_records(s.redis) if r["kind"] == "tool_call" and r["tool"] == "wipe"]
    assert [r["outcome"] for r in records] == ["outcome_unknown"]
