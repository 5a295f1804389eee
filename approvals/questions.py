"""Open server questions (MCP elicitation) in Redis: what was asked of whom, where its card is, and its one
outcome. The person's click lands on the web process while the turn that asked waits in a worker; the
answer crosses between them here.

The record (`chatops:question:<id>`, a hash) lives a little longer than the question may stay open. Its
`outcome` field is written once (HSETNX): by the asker's answer (accept, decline, cancel) or by the waiting
side (timeout, ended); whoever writes it first decides, so a click that arrives as the time runs out is
either the answer or told the question is closed, never both. An answer's content goes to a list the
waiting turn pops (BLPOP, in slices of two seconds until its deadline: a blocked connection is never
held longer than that, and a cancelled turn stops waiting at once). The content is the person's answer
to the server: it is never logged, and it is popped (deleted) as soon as it is read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT
from redis.utils import str_if_bytes

__all__ = ["Answered", "OpenQuestion", "QuestionStore"]

KEY = "chatops:question:{id}"
REPLY = "chatops:question:{id}:reply"
KEEP_AFTER_SECONDS = 600  # the record outlives the question: a late click is told it is closed
# One blocking pop at most this long: well inside the connections' socket timeout (5 s, bot/wiring.py),
# which would otherwise end the pop as an error.
WAIT_SLICE_SECONDS = 2.0
Action = Literal["accept", "decline", "cancel"]
ACTIONS = ("accept", "decline", "cancel")


@dataclass(frozen=True)
class OpenQuestion:
    id: str
    team: str
    channel: str
    thread_ts: str
    user: str  # the person whose call it is: the only one who may answer
    server: str
    tool: str | None
    mode: str  # "form" | "url"
    message: str
    schema: Mapping[str, Any] | None = None
    url: str | None = None
    card_ts: str | None = None
    outcome: str | None = None  # accept | decline | cancel | timeout | ended, once decided


@dataclass(frozen=True)
class Answered:
    action: Action
    content: dict[str, Any] | None = None


class QuestionStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def open(self, question: OpenQuestion, *, open_for: float) -> None:
        key = KEY.format(id=question.id)
        fields: dict[FieldT, EncodableT] = {
            "team": question.team,
            "channel": question.channel,
            "thread_ts": question.thread_ts,
            "user": question.user,
            "server": question.server,
            "tool": question.tool or "",
            "mode": question.mode,
            "message": question.message,
            "schema": json.dumps(question.schema) if question.schema is not None else "",
            "url": question.url or "",
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, int(open_for) + KEEP_AFTER_SECONDS)
            await pipe.execute()

    async def set_card(self, question_id: str, ts: str) -> None:
        await self._redis.hset(KEY.format(id=question_id), "card_ts", ts)

    async def get(self, question_id: str) -> OpenQuestion | None:
        raw = await self._redis.hgetall(KEY.format(id=question_id))
        if not raw:
            return None
        f = {str_if_bytes(k): str_if_bytes(v) for k, v in raw.items()}
        return OpenQuestion(
            question_id,
            team=f["team"],
            channel=f["channel"],
            thread_ts=f["thread_ts"],
            user=f["user"],
            server=f["server"],
            tool=f.get("tool") or None,
            mode=f["mode"],
            message=f["message"],
            schema=json.loads(f["schema"]) if f.get("schema") else None,
            url=f.get("url") or None,
            card_ts=f.get("card_ts") or None,
            outcome=f.get("outcome") or None,
        )

    async def close(self, question_id: str, outcome: str) -> bool:
        """Decide the question's outcome; False when it was already decided."""
        return bool(await self._redis.hsetnx(KEY.format(id=question_id), "outcome", outcome))

    async def answer(
        self, question_id: str, user: str, action: Action, content: Mapping[str, Any] | None = None
    ) -> Literal["ok", "unknown", "not_yours", "closed"]:
        """The person's answer, for the turn waiting on it. Only the person whose call it is may answer."""
        question = await self.get(question_id)
        if question is None:
            return "unknown"
        if question.user != user:
            return "not_yours"
        if question.outcome is not None or not await self.close(question_id, action):
            return "closed"
        reply = REPLY.format(id=question_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(reply, json.dumps({"action": action, "content": dict(content or {})}))
            pipe.expire(reply, KEEP_AFTER_SECONDS)
            await pipe.execute()
        return "ok"

    async def wait(self, question_id: str, *, seconds: float) -> Answered | None:
        """The answer, or None when none came within `seconds` (the question is then closed as timed out)."""
        deadline = time.monotonic() + seconds
        reply = REPLY.format(id=question_id)
        while (left := deadline - time.monotonic()) > 0:
            # at least 10 ms: Redis reads a timeout that rounds to 0 ms as "block forever"
            popped = await self._redis.blpop([reply], timeout=max(0.01, min(left, WAIT_SLICE_SECONDS)))
            if popped is not None:
                return _answered(popped[1])
        if await self.close(question_id, "timeout"):
            return None
        # An answer decided it just before the deadline: its content is (about to be) in the list.
        popped = await self._redis.blpop([reply], timeout=WAIT_SLICE_SECONDS)
        return _answered(popped[1]) if popped is not None else None


def _answered(raw: bytes | str) -> Answered | None:
    data = json.loads(raw)
    action = data.get("action")
    if action not in ACTIONS:
        return None
    content = data.get("content")
    return Answered(action, content if isinstance(content, dict) and action == "accept" else None)
