"""Ingress decides what is a request and admits each message once (SPEC §7, §10)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from approvals.turn_queue import STREAM, TurnConsumer, job_key, job_state, queued_job_ids
from approvals.turns import TurnStore
from bot.identity import BotIdentity
from bot.ingress import Ingress
from bot.queues import Queues

BOT = BotIdentity("T0CHATOPS", "U0CHATOPS", "B0CHATOPS")


def event(
    kind: str = "app_mention", *, ts: str = "1.000100", event_id: str = "Ev1", **extra: Any
) -> dict[str, Any]:
    body = {"type": kind, "user": "U0ALICE", "channel": "C0DATAENG", "ts": ts, "text": "<@U0CHATOPS> hi"}
    body.update(extra)
    return {"type": "event_callback", "team_id": "T0CHATOPS", "event_id": event_id, "event": body}


@pytest.fixture
def ingress(aredis: aioredis.Redis, redis_url: str) -> Ingress:
    return Ingress(TurnStore(aredis), Queues(redis.Redis.from_url(redis_url)), BOT)


def queued(redis_url: str) -> int:
    return len(queued_job_ids(redis.Redis.from_url(redis_url)))


async def test_a_mention_is_queued_once_across_retries_and_the_message_twin(
    ingress: Ingress, redis_url: str
) -> None:
    assert await ingress.admit(event()) == "queued"
    assert await ingress.admit(event(), retrying=True) == "duplicate"
    assert await ingress.admit(event("message", event_id="Ev2", channel_type="channel")) == "duplicate"
    assert queued(redis_url) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (event(bot_id="B0CHATOPS"), "bot"),
        (event(bot_id="B0OTHER"), "bot"),
        (event("message", subtype="message_changed"), "subtype"),
        (event("message", subtype="message_deleted"), "subtype"),
        (event(user="U0CHATOPS"), "human"),
        (event("message", text="just chatting", channel_type="channel"), "not addressed"),
        (event("message", text="reply", thread_ts="0.5", channel_type="channel"), "not addressed"),
    ],
)
async def test_what_is_not_a_request_is_ignored(
    ingress: Ingress, redis_url: str, body: dict[str, Any], reason: str
) -> None:
    assert reason in await ingress.admit(body)
    assert queued(redis_url) == 0


async def test_dms_and_replies_in_bot_threads_are_requests(ingress: Ingress, aredis: aioredis.Redis) -> None:
    dm = event("message", channel="D0ALICE", channel_type="im", text="what is running?")
    assert await ingress.admit(dm) == "queued"
    await TurnStore(aredis).mark_bot_thread("T0CHATOPS", "C0DATAENG", "0.5")
    reply = event(
        "message", ts="2.0", event_id="Ev3", text="and now?", thread_ts="0.5", channel_type="channel"
    )
    assert await ingress.admit(reply) == "queued"


async def test_a_retry_whose_enqueue_was_lost_is_queued_again(ingress: Ingress, redis_url: str) -> None:
    assert await ingress.admit(event()) == "queued"
    sync = redis.Redis.from_url(redis_url)
    sync.delete(STREAM, *sync.keys(job_key("*")))  # the web process died before the job landed
    assert await ingress.admit(event(), retrying=True) == "re-enqueued"
    assert queued(redis_url) == 1


async def test_the_turn_and_its_job_are_written_together_as_the_turn_pools_read_them(
    ingress: Ingress, redis_url: str
) -> None:
    from approvals.turns import turn_id_for

    assert await ingress.admit(event()) == "queued"
    sync = redis.Redis.from_url(redis_url)
    turn_id = turn_id_for("T0CHATOPS", "C0DATAENG", "1.000100")
    assert queued_job_ids(sync) == [turn_id]
    assert job_state(sync, turn_id)["status"] == "queued"
    ran: list[tuple[str, str]] = []

    async def handler(turn: str, attempt: str) -> str:
        ran.append((turn, attempt))
        return "answered"

    consumer = TurnConsumer(aioredis.Redis.from_url(redis_url), "test", handler, slots=1)
    assert await consumer.drain() == 1  # a consumer of the group finds it
    assert ran == [(turn_id, "first")]
    assert job_state(sync, turn_id)["status"] == "finished"


async def test_any_text_is_stored_exactly(ingress: Ingress, aredis: aioredis.Redis) -> None:
    text = (
        '<@U0CHATOPS> why is "daily_ad_metrics" late? ünïcödé 🔥 日本語 \\n tab\there \\u0000 {"json": [1]}'
    )
    assert await ingress.admit(event(text=text)) == "queued"
    from approvals.turns import turn_id_for

    turn = await TurnStore(aredis).load(turn_id_for("T0CHATOPS", "C0DATAENG", "1.000100"))
    assert turn is not None
    assert turn.text == text.removeprefix("<@U0CHATOPS> ")  # the mention itself is not part of the question
