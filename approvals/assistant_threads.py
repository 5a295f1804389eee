"""Which threads are Slack assistant threads (the AI app's split view), and whether one has its title yet.

`assistant_thread_started` reaches the web process; the turns in that thread run on a worker. Redis carries
the fact between them: the worker sets the status line only where Slack shows one, and titles the thread
from its first question exactly once (the first turn to take the "untitled" mark wins).
"""

from __future__ import annotations

import redis.asyncio as aioredis

__all__ = ["AssistantThreads"]

THREAD_TTL_SECONDS = 30 * 24 * 3600  # assistant threads are revisited for weeks; an old one answers as a DM


class AssistantThreads:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    @staticmethod
    def _key(channel: str, thread_ts: str) -> str:
        return f"chatops:assistant-thread:{channel}:{thread_ts}"

    async def started(self, channel: str, thread_ts: str) -> None:
        key = self._key(channel, thread_ts)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, "1", ex=THREAD_TTL_SECONDS)
            pipe.set(key + ":untitled", "1", ex=THREAD_TTL_SECONDS, nx=True)
            await pipe.execute()

    async def is_assistant(self, channel: str, thread_ts: str) -> bool:
        return bool(await self._redis.exists(self._key(channel, thread_ts)))

    async def take_title(self, channel: str, thread_ts: str) -> bool:
        """True once per thread: the caller titles it from the question it is answering."""
        return bool(await self._redis.delete(self._key(channel, thread_ts) + ":untitled"))
