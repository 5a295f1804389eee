"""A streamed working message's last progress: it goes out with the stream's stop, not after it."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from approvals.turns import Turn
from bot.poster import Poster, make_slack_client
from bot.progress import SlackProgress
from bot.stream_progress import Chunks, StreamProgress
from bot.streams import SlackStreams
from fixtures.slack import TEAM_ID, FakeSlack

CHANNEL = "C0INCIDENT"


async def test_what_settling_did_not_send_ends_the_stream_with_its_stop(
    slack: FakeSlack, aredis: aioredis.Redis
) -> None:
    root = slack.post_user_message(CHANNEL, "U0ALICE", "which presto queries are slow?")
    turn = Turn("t1", TEAM_ID, CHANNEL, "channel", "U0ALICE", "slow?", root, root, 0.0)
    poster = Poster(make_slack_client("xoxb-test", slack.base_url), aredis, TEAM_ID)
    streams = SlackStreams(poster, aredis)
    ts = await streams.start(turn, "t1:first:working")
    assert ts is not None
    left: dict[str, Chunks] = {}
    working = asyncio.get_running_loop().create_future()
    working.set_result(ts)
    progress = StreamProgress(
        streams,
        CHANNEL,
        working,
        lambda _: True,
        SlackProgress(poster, CHANNEL, ts),
        leave=left.__setitem__,
        clock=lambda: 100.0,  # time stands still: after the first append, the rest waits for the interval
    )

    await progress.text("Checking Presto.")
    await progress.tool_started("io.example/presto", "query_history")
    await slack.wait_for_async(lambda: slack.calls("chat.appendStream"))
    await progress.tool_finished("io.example/presto", "query_history", True, 112.0)
    await progress.thinking()
    await progress.text("One query is running.")
    await progress.settle()
    await streams.stop(CHANNEL, ts, "t1:first:working", left.pop(ts, ()))

    assert len(slack.calls("chat.appendStream")) == 1  # the last words and outcome went with the stop
    msg = slack.message(CHANNEL, ts)
    assert msg is not None
    assert not msg.streaming
    assert [(t["title"], t["status"]) for t in msg.tasks().values()] == [
        ("presto · query_history", "complete")
    ]
    assert msg.text == "Checking Presto.\n\nOne query is running."
