"""The per-person refresh lock: one refresh at a time for one person, across every process (SPEC §5).

Rotating providers answer a refresh token presented twice by revoking the whole family, so two processes
must never refresh with the same one. The lock's TTL is one token request plus room for the Redis work and
the token's check around it; a live holder extends it every third of that, so however slow the provider,
no second refresh gets in. The TTL only bounds how long a holder that died blocks the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from mcp_clients.provider import TOKEN_REQUEST_TIMEOUT_SECONDS

__all__ = ["LOCK_SECONDS", "kept"]

log = logging.getLogger(__name__)

LOCK_SECONDS = TOKEN_REQUEST_TIMEOUT_SECONDS + 5.0


@contextlib.asynccontextmanager
async def kept(redis: aioredis.Redis, name: str, seconds: float, *, wait: float) -> AsyncIterator[bool]:
    """Hold the Redis lock `name` for the block, extended while the block runs. Yields False (holding
    nothing) when the lock could not be had within `wait` seconds."""
    lock = redis.lock(name, timeout=seconds, blocking_timeout=wait)
    try:
        acquired = await lock.acquire()
    except LockError:
        acquired = False
    if not acquired:
        yield False
        return
    keeper = _keep_alive(lock, seconds)
    try:
        yield True
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        # The lock may have expired while we worked; the next caller re-checks what it guards anyway.
        with contextlib.suppress(LockError):
            await lock.release()


def _keep_alive(lock: Lock, seconds: float) -> asyncio.Task[None]:
    """Reset `lock`'s TTL every third of it until cancelled. The refresh it guards may outlast one TTL (a slow
    provider, discovery, fetching signing keys); had the lock lapsed, a second caller would refresh with the
    same refresh token, and a rotating provider would revoke the whole family."""

    async def extend() -> None:
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                await lock.reacquire()
            except LockError:  # lost already (this loop was starved past the TTL): nothing left to keep
                log.warning("the refresh lock %s lapsed while its refresh was running", lock.name)
                return
            except RedisError as exc:  # the next try may get through; the TTL has slack for it
                log.warning("could not extend the refresh lock: %s", type(exc).__name__)

    return asyncio.create_task(extend(), name="refresh lock keep-alive")
