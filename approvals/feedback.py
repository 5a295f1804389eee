"""People's thumbs up/down on an answer: one vote per person per turn, the last click counting."""

from __future__ import annotations

import redis.asyncio as aioredis

__all__ = ["Feedback"]


class Feedback:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def vote(self, turn_id: str, user: str, vote: str) -> None:
        await self._redis.hset(f"chatops:feedback:{turn_id}", user, vote)
