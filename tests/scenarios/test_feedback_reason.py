"""After a 👎, the person may say what was wrong (issue 19 item 4): a small modal opens, and what they
write is stored with the feedback (secrets redacted); a 👍 asks nothing."""

from __future__ import annotations

from bot.blocks import FEEDBACK_ACTION_ID
from bot.feedback_listeners import REASON_CALLBACK_ID
from fixtures.anthropic_fake import text
from fixtures.slack import TEAM_ID
from fixtures.waiting import wait_until
from tests.scenarios.conftest import Scenario, turn_id_for

CHANNEL = "C0DATAENG"


def answered(s: Scenario) -> tuple[str, str]:
    s.link("alice")
    s.world.anthropic.set_default(text("Presto is fine."))
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "is presto ok?")
    assert s.ingress.post(mention).status == 200
    s.work()
    ts = str(mention.event["ts"])
    (msg,) = s.bot_messages(CHANNEL, ts)
    return turn_id_for(TEAM_ID, CHANNEL, ts), msg.ts


def vote(s: Scenario, turn_id: str, answer_ts: str, how: str) -> None:
    click = s.ingress.block_actions(
        "U0ALICE", FEEDBACK_ACTION_ID, channel=CHANNEL, message_ts=answer_ts, value=f"{how}:{turn_id}"
    )
    assert s.ingress.post(click).status == 200
    wait_until("the vote to be stored", lambda: s.redis.hget(f"chatops:feedback:{turn_id}", "U0ALICE"))


def test_a_thumbs_down_asks_why_and_the_reason_is_stored_with_the_feedback(scenario: Scenario) -> None:
    s = scenario
    turn_id, answer_ts = answered(s)
    vote(s, turn_id, answer_ts, "down")
    (opened,) = s.world.slack.wait_for_calls("views.open")
    view = opened.args["view"]
    assert view["callback_id"] == REASON_CALLBACK_ID
    assert view["private_metadata"] == turn_id
    assert all(b.get("optional") for b in view["blocks"] if b["type"] == "input")  # the reason is optional

    (block,) = [b for b in view["blocks"] if b["type"] == "input"]
    said = "It looked at the wrong cluster; token=abc123secret"
    submit = s.ingress.view_submission(
        "U0ALICE",
        callback_id=REASON_CALLBACK_ID,
        private_metadata=turn_id,
        values={block["block_id"]: {block["element"]["action_id"]: said}},
    )
    assert s.ingress.post(submit).status == 200
    stored = wait_until(
        "the reason to be stored", lambda: s.redis.hget(f"chatops:feedback-reason:{turn_id}", "U0ALICE")
    )
    assert b"wrong cluster" in stored
    assert b"abc123secret" not in stored


def test_a_thumbs_up_opens_nothing(scenario: Scenario) -> None:
    s = scenario
    turn_id, answer_ts = answered(s)
    vote(s, turn_id, answer_ts, "up")
    assert s.world.slack.calls("views.open") == []
