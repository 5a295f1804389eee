"""Small tallies in Redis that the flows keep: requests in a sliding window, and things done once a while.

Both are single round trips. A sliding window rather than minute buckets, which let a burst that straddles
a bucket boundary through twice.
"""

from __future__ import annotations

import redis.asyncio as aioredis

__all__ = ["Tallies"]


class Tallies:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def in_window(self, name: str, member: str, now: float, seconds: float) -> int:
        """Count `member` at `now` under `name`; how many were counted in the last `seconds` (itself too)."""
        key = f"chatops:rate:{name}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - seconds)
            pipe.zadd(key, {member: now})
            pipe.zcard(key)
            pipe.expire(key, int(seconds * 2))
            return int((await pipe.execute())[2])

    async def first(self, name: str, seconds: int) -> bool:
        """True the first time `name` is marked in `seconds` (saying something once a day, say)."""
        return bool(await self._redis.set(f"chatops:{name}", "1", nx=True, ex=seconds))
