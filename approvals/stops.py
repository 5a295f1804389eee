"""Requests to stop a running turn, in Redis: the click lands in `web`, the turn runs on some worker."""

from __future__ import annotations

import redis.asyncio as aioredis

__all__ = ["TurnStops"]

STOP_KEY = "chatops:turn-stop:{turn_id}"
STOP_TTL_SECONDS = 3600  # far longer than any turn may run (the loop's wall-clock cap)


class TurnStops:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def request(self, turn_id: str, user: str) -> bool:
        """Ask the turn to stop; False when someone already had (the first one is who stopped it)."""
        return bool(
            await self._redis.set(STOP_KEY.format(turn_id=turn_id), user, nx=True, ex=STOP_TTL_SECONDS)
        )

    async def who(self, turn_id: str) -> str | None:
        raw = await self._redis.get(STOP_KEY.format(turn_id=turn_id))
        return raw.decode() if isinstance(raw, bytes) else raw
