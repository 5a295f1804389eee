"""Requests to stop a running turn, in Redis: the click lands in `web`, the turn runs on some worker.

Beside each request, the servers the turn has called a tool on so far (issue 19 item 3): their approvers may
stop it too, and the click is judged in `web`, so the worker writes them down as each call starts.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from approvals.turns import TURN_TTL_SECONDS

__all__ = ["TurnStops"]

STOP_KEY = "chatops:turn-stop:{turn_id}"
STOP_TTL_SECONDS = 3600  # far longer than any turn may run (the loop's wall-clock cap)
# As long as the turn itself: a turn paused for approval resumes (and may be stopped) hours later.
SERVERS_KEY = "chatops:turn-servers:{turn_id}"


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
        return None if raw is None else str_if_bytes(raw)

    async def using(self, turn_id: str, server: str) -> None:
        """The turn is calling a tool on `server` (its registry name)."""
        key = SERVERS_KEY.format(turn_id=turn_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(key, server)
            pipe.expire(key, TURN_TTL_SECONDS)
            await pipe.execute()

    async def servers(self, turn_id: str) -> frozenset[str]:
        """The servers the turn has called a tool on so far (none before its first call)."""
        members = await self._redis.smembers(SERVERS_KEY.format(turn_id=turn_id))
        return frozenset(str_if_bytes(m) for m in members)
