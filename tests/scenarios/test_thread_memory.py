"""Thread memory respects permissions (SPEC §7): a person's turn hands the model earlier tool output only from
servers that person may use now; the answers already posted stay, and the stored conversation keeps the
originals for whoever may see them."""

from __future__ import annotations

import json

from approvals.turns import thread_key
from fixtures.anthropic_fake import Body, Reply, last_user_text, text, tool_results, tool_use
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from fixtures.slack import TEAM_ID
from tests.scenarios.conftest import Scenario

CHANNEL = "C0DATAENG"
RAW = "presto-raw-output-91c2"  # only ever in presto's output, never in an answer
WITHHELD = "[output of presto withheld: you don't have access to this server]"


def script(body: Body) -> Reply:
    if "which presto queries" in last_user_text(body) and not tool_results(body):
        return tool_use("presto__query_history", {"limit": 5}, text_before="Checking.")
    if tool_results(body):
        return text(f"The runaway one is {RUNAWAY_QUERY_ID}.")
    return text("Going by this thread's history, see above.")


def asked(s: Scenario) -> str:
    return json.dumps(s.world.anthropic.last_request().body["messages"])


def test_earlier_tool_output_reaches_only_people_who_may_use_its_server_now(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "dave", "erin"):
        s.link(person)
    s.world.servers["presto"].knobs.inject("query_history", RAW)
    s.world.anthropic.set_default(script)
    first = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    s.ingress.post(first)
    s.work()
    assert RAW in asked(s)  # alice may use presto: her turn read its output

    # dave (finance) may not use presto: its output is withheld from his turn, naming the server; the
    # answer alice got in the channel is public and stays.
    follow_up = s.ingress.app_mention("U0DAVE", CHANNEL, "what did it find?", thread_ts=first.event["ts"])
    s.ingress.post(follow_up)
    s.work()
    seen = asked(s)
    assert "what did it find?" in seen
    assert RAW not in seen
    assert WITHHELD in seen
    assert f"The runaway one is {RUNAWAY_QUERY_ID}." in seen
    # The thread keeps the original for those who may see it.
    stored = s.redis.get(f"chatops:conv:{thread_key(TEAM_ID, CHANNEL, first.event['ts'])}")
    assert stored is not None
    assert RAW.encode() in stored
    assert b"withheld: you don't have access" not in stored

    # erin (ads-eng) may use presto, so her turn gets it back.
    again = s.ingress.app_mention("U0ERIN", CHANNEL, "and now?", thread_ts=first.event["ts"])
    s.ingress.post(again)
    s.work()
    assert "and now?" in asked(s)
    assert RAW in asked(s)
    assert WITHHELD not in asked(s)


def test_access_lost_since_the_output_was_read_withholds_it_from_the_same_person(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.servers["presto"].knobs.inject("query_history", RAW)
    s.world.anthropic.set_default(script)
    first = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    s.ingress.post(first)
    s.work()
    assert RAW in asked(s)
    # The registry closes presto to alice's groups; the snapshot is shared, so drop it to see the change now.
    s.world.registry.patch_governance("io.example/presto", {"allowed_groups": ["ads-eng"]})
    for key in s.redis.scan_iter(match="chatops:registry*"):
        s.redis.delete(key)
    follow_up = s.ingress.app_mention("U0ALICE", CHANNEL, "anything else?", thread_ts=first.event["ts"])
    s.ingress.post(follow_up)
    s.work()
    assert "anything else?" in asked(s)
    assert RAW not in asked(s)
    assert WITHHELD in asked(s)
