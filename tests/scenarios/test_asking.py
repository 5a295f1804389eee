"""Asking the bot in Slack (SPEC §7 "Asking", §10): answered in the thread, under the asker's identity,
once per message, however Slack delivers it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import jwt

from fixtures.anthropic_fake import Body, Reply, text, tool_use
from fixtures.incident_script import question_and_results
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from tests.processes import kill_worker
from tests.scenarios.conftest import Scenario

CHANNEL = "C0DATAENG"
QUERY_ID = re.compile(r"\b\d{8}_\d{6}_\d{5}_[a-z0-9]{5}\b")


def investigator(body: Body) -> Reply:
    """Asks presto once per question, then answers with what presto said and how many questions it saw."""
    _, results = question_and_results(body.get("messages") or [])
    tools = {t["name"] for t in body.get("tools") or []}
    if not results and "presto__query_history" in tools:
        return tool_use(
            "presto__query_history", {"state": "RUNNING", "limit": 5}, text_before="Checking Presto."
        )
    questions = [m for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], str)]
    ids = sorted(set(QUERY_ID.findall("\n".join(results))))
    return text(f"Questions so far: {len(questions)}. Running queries: {', '.join(ids) or 'none'}.")


def answer_text(s: Scenario, ts: str) -> str:
    bots = s.bot_messages(CHANNEL, ts)
    assert bots, "the bot did not answer in the thread"
    return "\n".join(str(b.get("text", {}).get("text", "")) for b in bots[-1].blocks or []) or bots[-1].text


def test_a_linked_users_mention_is_answered_in_its_thread_with_what_presto_returned(
    scenario: Scenario,
) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(investigator)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    assert s.ingress.post(mention).status == 200
    s.work()
    ts = mention.event["ts"]
    assert RUNAWAY_QUERY_ID in answer_text(s, ts)
    assert s.turn_status(CHANNEL, ts) == "answered"
    calls = s.world.servers["presto"].record.tool_calls("query_history")
    assert calls
    for call in calls:
        assert call.sub == "u-alice"
        assert call.aud == s.world.resource("presto")
    assert any(c.args.get("name") == "eyes" for c in s.world.slack.calls("reactions.add"))


def test_a_follow_up_continues_the_conversation_even_in_another_worker_process(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(investigator)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    s.ingress.post(mention)
    s.work()
    ts = mention.event["ts"]
    follow_up = s.ingress.message("U0ALICE", CHANNEL, "and are they still running?", thread_ts=ts)
    assert s.ingress.post(follow_up).status == 200
    s.work_in_subprocess()
    assert "Questions so far: 2" in answer_text(s, ts)
    last = s.world.anthropic.last_request()
    assert last is not None
    contents = [m["content"] for m in last.body["messages"] if isinstance(m["content"], str)]
    assert any("which presto queries are running?" in c for c in contents)
    assert any("are they still running?" in c for c in contents)


def test_a_second_person_in_the_thread_is_served_under_their_own_identity(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("bob")
    s.world.anthropic.set_default(investigator)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    s.ingress.post(mention)
    s.work()
    ts = mention.event["ts"]
    s.ingress.post(s.ingress.app_mention("U0BOB", CHANNEL, "check again for me", thread_ts=ts))
    s.work()
    subs = [c.sub for c in s.world.servers["presto"].record.tool_calls("query_history")]
    assert subs == ["u-alice", "u-bob"]
    assert "Questions so far: 2" in answer_text(s, ts)


def test_retries_and_the_mention_message_pair_produce_one_answer(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(investigator)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    ts = mention.event["ts"]
    retries = [s.ingress.sign(mention, retry_num=n) for n in (1, 2, 3)]
    as_message = s.ingress.message("U0ALICE", CHANNEL, mention.event["text"], ts=ts)
    deliveries = asyncio.run(s.ingress.apost_many([mention, *retries, as_message]))
    assert all(200 <= d.status < 300 for d in deliveries)
    s.work()
    assert len(s.world.anthropic.requests()) == 2  # one tool step, one answer: a single run
    answers = [m for m in s.bot_messages(CHANNEL, ts) if "Questions so far" in str(m.blocks)]
    assert len(answers) == 1
    # Delivered again a day later (a replay after restarts): still nothing new.
    assert s.ingress.post(s.ingress.sign(mention, retry_num=4)).status == 200
    s.work()
    assert len(s.world.anthropic.requests()) == 2


def test_an_unlinked_user_is_prompted_then_answered_without_asking_again(scenario: Scenario) -> None:
    s = scenario
    s.world.anthropic.set_default(investigator)
    mention = s.ingress.app_mention("U0CAROL", CHANNEL, "which presto queries are running?")
    s.ingress.post(mention)
    s.work()
    ts = mention.event["ts"]
    prompts = s.world.slack.ephemerals(CHANNEL, user="U0CAROL")
    assert len(prompts) == 1
    assert s.bot_messages(CHANNEL, ts) == []
    assert s.world.anthropic.requests() == []  # nothing ran without an identity
    url = next(e["url"] for b in prompts[0].blocks or [] if b["type"] == "actions" for e in b["elements"])
    page = s.browse_link("carol", url)
    assert page.status_code == 200
    assert "connected" in page.text
    s.work()
    assert RUNAWAY_QUERY_ID in answer_text(s, ts)
    assert {c.sub for c in s.world.servers["presto"].record.tool_calls()} == {"u-carol"}


def test_acks_stay_fast_while_the_model_is_slow(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(investigator)
    s.world.anthropic.set_latency(20.0)
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env)
    try:
        first = s.ingress.post(s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?"))
        s.world.anthropic.wait_for_requests(1, timeout=30)  # the worker is now inside a 20 s model call
        deliveries = [first]
        for n in range(5):
            deliveries.append(s.ingress.post(s.ingress.app_mention("U0ALICE", CHANNEL, f"question {n}")))
        click = s.ingress.block_actions("U0ALICE", "feedback", channel=CHANNEL, value="up:t0")
        deliveries.append(s.ingress.post(click))
        assert all(d.status == 200 for d in deliveries)
        assert max(d.latency for d in deliveries) < 3.0
    finally:
        # The work-horse too (it is in a process group of its own): left behind, it would go on with its
        # turn and that turn's lease for 20 s, into the next test, whose first message has the same ts and
        # so the same turn id.
        kill_worker(worker)
        s.world.anthropic.set_latency(0.0)


def test_tokens_seen_by_presto_are_audience_bound(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(investigator)
    s.ingress.post(s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?"))
    s.work()
    for request in s.world.servers["presto"].record.all():
        assert request.authorization is not None
        claims = jwt.decode(
            request.authorization.removeprefix("Bearer "), options={"verify_signature": False}
        )
        assert claims["aud"] == s.world.resource("presto")
