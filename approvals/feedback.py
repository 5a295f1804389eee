"""People's thumbs up/down on an answer: one vote per person per turn, the last click counting; after a 👎,
the person's optional reason, stored beside the vote (secrets redacted, capped)."""

from __future__ import annotations

import redis.asyncio as aioredis

from agent.redaction import redact_secrets

__all__ = ["REASON_MAX_CHARS", "Feedback"]

REASON_MAX_CHARS = 500


class Feedback:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def vote(self, turn_id: str, user: str, vote: str) -> None:
        await self._redis.hset(f"chatops:feedback:{turn_id}", user, vote)

    async def explain(self, turn_id: str, user: str, reason: str) -> None:
        """Why `user` found this turn's answer unhelpful (the last reason given counts)."""
        text = redact_secrets(reason.strip())[0][:REASON_MAX_CHARS]
        if text:
            await self._redis.hset(f"chatops:feedback-reason:{turn_id}", user, text)

    async def reasons(self, turn_id: str) -> dict[str, str]:
        raw = await self._redis.hgetall(f"chatops:feedback-reason:{turn_id}")
        return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
