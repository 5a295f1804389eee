"""Slack's limits (ACCEPTANCE 9, 10): a 60k-character answer, and Slack refusing it once, lose nothing; a card
redrawn more than five times, or after thirty minutes, is updated with the bot token, not a response_url."""

from __future__ import annotations

import json
import re

import pytest
import redis as sync_redis

from approvals.store import Status
from bot.cards import APPROVE_ACTION_ID
from bot.queues import Queues
from fixtures.anthropic_fake import resumed, text, tool_use
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from fixtures.waiting import wait_until
from tests.faults.conftest import Scenario

CHANNEL = "C0DATAENG"
LINES = [
    f"line {n:05d} of the incident timeline: executor lost, stage retried, backfill slower"
    for n in range(740)
]
ANSWER = "\n".join(LINES)  # ~60k characters
MARK = re.compile(r"line (\d{5}) of")


def delivered(s: Scenario, ts: str) -> set[str]:
    """Every line the person can read: the thread's bot messages and the files attached to it."""
    seen = " ".join(m.text + json.dumps(m.blocks) for m in s.bot_messages(CHANNEL, ts))
    seen += " ".join((f.content or b"").decode() for f in s.world.slack.files())
    return set(MARK.findall(seen))


def sent_within_limits(s: Scenario) -> None:
    for call in s.world.slack.calls():
        blocks = call.args.get("blocks")
        if call.method not in ("chat.postMessage", "chat.update") or not blocks:
            continue
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        assert len(blocks) <= 50
        for block in blocks:
            if block.get("type") == "section":
                assert len(block["text"]["text"]) <= 3000


@pytest.mark.parametrize("refused_once", [False, True])
def test_a_60k_answer_arrives_whole_even_when_slack_refuses_it_once(
    scenario: Scenario, refused_once: bool
) -> None:
    s = scenario
    s.link("alice")
    assert len(ANSWER) > 60_000
    s.world.anthropic.set_default(text(ANSWER))
    if refused_once:
        s.world.slack.fail_next("chat.update", error="msg_blocks_too_long")
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "summarise the incident timeline")
    s.ingress.post(mention)
    s.work()
    sent_within_limits(s)
    assert delivered(s, mention.event["ts"]) == {f"{n:05d}" for n in range(740)}
    assert s.turn_status(CHANNEL, mention.event["ts"]) == "answered"


def test_card_updates_past_five_and_past_thirty_minutes_use_chat_update_never_the_response_url(
    scenario: Scenario,
) -> None:
    s = scenario
    s.world.registry.patch_governance("io.example/presto", {"tools": {"kill_query": {"quorum": 4}}})
    for person in ("dave", "erin"):
        s.world.idp.set_groups(person, ["data-eng", "presto-oncall"])
    for person in ("alice", "bob", "carol", "dave", "erin"):
        s.link(person)
    s.world.anthropic.set_default(
        lambda body: (
            text("Done.")
            if resumed(body)
            else tool_use(
                "presto__kill_query", {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway"}, text_before="Kill."
            )
        )
    )
    mention = s.ingress.app_mention("U0ALICE", "C0INCIDENT", "kill the runaway backfill")
    s.ingress.post(mention)
    s.work()
    (approval,) = s.approvals("C0INCIDENT", mention.event["ts"])
    card_ts = s.card_ts(approval)
    urls = []
    for user in ("U0BOB", "U0CAROL", "U0DAVE", "U0ERIN"):
        s.world.slack.advance(31 * 60)  # every click comes more than 30 minutes after the card was posted
        before = s.redis.llen(f"chatops:approval:{approval.id}:attempts")
        click = s.ingress.block_actions(
            user, APPROVE_ACTION_ID, channel="C0INCIDENT", message_ts=card_ts, value=approval.id
        )
        urls.append(click.payload["response_url"])
        assert s.ingress.post(click).status == 200
        wait_until("the vote", lambda b=before: s.redis.llen(f"chatops:approval:{approval.id}:attempts") > b)
    s.work()
    s.redis.sadd("chatops:cards-dirty", approval.id)  # one more redraw, by the sweeper
    Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()
    s.work()
    assert s.approval(approval.id).status == Status.SUCCEEDED
    updates = [c for c in s.world.slack.calls("chat.update") if c.args.get("ts") == card_ts]
    assert len(updates) > 5
    assert all(c.status == 200 and c.response.get("ok") for c in updates)
    assert all(s.world.slack.response_url_uses(url) == 0 for url in urls)
