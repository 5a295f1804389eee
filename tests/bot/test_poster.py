"""Posting to Slack: one visible copy whatever the network does, and Retry-After honoured everywhere."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from bot.poster import Poster, PostError, make_slack_client
from fixtures.slack import FakeSlack

CHANNEL = "C0INCIDENT"


def poster(slack: FakeSlack, redis: aioredis.Redis) -> Poster:
    return Poster(make_slack_client("xoxb-test", slack.base_url), redis, "T0CHATOPS")


async def test_a_lost_response_still_leaves_exactly_one_message(
    slack: FakeSlack, aredis: aioredis.Redis
) -> None:
    root = slack.post_user_message(CHANNEL, "U0ALICE", "why did the dag fail?")
    slack.reset_after_read("chat.postMessage")
    posted = await poster(slack, aredis).post(CHANNEL, text="answer", thread_ts=root, marker="t1:answer:0")
    bot_messages = [m for m in slack.messages(CHANNEL, thread_ts=root) if m.bot_id]
    assert [m.text for m in bot_messages] == ["answer"]
    assert posted.ts == bot_messages[0].ts


async def test_a_429_blocks_that_method_until_retry_after_and_not_others(
    slack: FakeSlack, aredis: aioredis.Redis
) -> None:
    root = slack.post_user_message(CHANNEL, "U0ALICE", "hello")
    slack.fail_next("chat.postMessage", 429, retry_after=1)
    p = poster(slack, aredis)
    await p.react(CHANNEL, root, "eyes")  # another method: not blocked
    await p.post(CHANNEL, text="once", thread_ts=root, marker="t2:answer:0")
    posts = slack.calls("chat.postMessage")
    assert [c.status for c in posts] == [429, 200]
    assert posts[1].monotonic - posts[0].monotonic >= 0.95
    assert len([m for m in slack.messages(CHANNEL, thread_ts=root) if m.bot_id]) == 1
    # Another process (same Redis) respects the same gate: its first call waits too.
    slack.fail_next("chat.update", 429, retry_after=1)
    with pytest.raises(PostError):
        await p.update(CHANNEL, "0000.0001", text="x")  # message_not_found after the wait, not a tight loop
    updates = slack.calls("chat.update")
    assert updates[-1].monotonic - updates[0].monotonic >= 0.95


async def test_server_errors_on_updates_are_retried(slack: FakeSlack, aredis: aioredis.Redis) -> None:
    root = slack.post_user_message(CHANNEL, "U0ALICE", "hello")
    p = poster(slack, aredis)
    posted = await p.post(CHANNEL, text="v1", thread_ts=root, marker="t3:answer:0")
    slack.fail_next("chat.update", 503)
    await p.update(CHANNEL, posted.ts, text="v2")
    message = slack.message(CHANNEL, posted.ts)
    assert message is not None
    assert message.text == "v2"


async def test_slack_refusals_surface_with_their_error_code(slack: FakeSlack, aredis: aioredis.Redis) -> None:
    with pytest.raises(PostError) as info:
        await poster(slack, aredis).post(CHANNEL, text="x", blocks=[{"type": "divider"}] * 51, marker="t4:0")
    assert info.value.error == "invalid_blocks"


async def test_calls_of_one_job_share_one_kept_alive_connection(
    slack: FakeSlack, aredis: aioredis.Redis
) -> None:
    from bot.poster import slack_session

    root = slack.post_user_message(CHANNEL, "U0ALICE", "why did the dag fail?")
    session = slack_session()
    try:
        kept = Poster(make_slack_client("xoxb-test", slack.base_url, session=session), aredis, "T0CHATOPS")
        await kept.react(CHANNEL, root, "eyes")
        posted = await kept.post(CHANNEL, text="working", thread_ts=root, marker="t1:working")
        await kept.update(CHANNEL, posted.ts, text="answer")
        await kept.react(CHANNEL, root, "eyes", remove=True)
    finally:
        await session.close()
    peers = {c.peer for c in slack.calls() if c.method != "conversations.replies"}
    assert len(peers) == 1, peers  # without the session: one new connection (TCP + TLS) per call


async def test_a_plain_string_that_reaches_the_poster_is_treated_as_untrusted(
    slack: FakeSlack, aredis: aioredis.Redis
) -> None:
    p = poster(slack, aredis)
    hostile = "<!channel> <@U0ALICE> <https://evil.example|https://good.example> AKIAIOSFODNN7EXAMPLE"
    control = ("<!channel>", "<@U0ALICE>", "<https://evil.example|", "AKIAIOSFODNN7EXAMPLE")
    root = slack.post_user_message(CHANNEL, "U0ALICE", "hello")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "<!channel> look"}}]
    posted = await p.post(CHANNEL, text=hostile, blocks=blocks, thread_ts=root, marker="t1:x")
    await p.update(CHANNEL, posted.ts, text=hostile)
    await p.ephemeral(CHANNEL, "U0BOB", text=hostile, thread_ts=root)
    await p.upload_text(CHANNEL, root, filename="a.md", title=hostile, content=hostile)
    sent = json.dumps([call.args for call in slack.calls()])
    assert [c for c in control if c in sent] == []
    (uploaded,) = slack.files()
    assert "evil.example" in slack.file_content(uploaded.id).decode()
    assert [c for c in control if c in slack.file_content(uploaded.id).decode()] == []
