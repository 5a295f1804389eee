from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from fixtures.redis_proc import RedisProc


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProc]:
    server = RedisProc().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProc) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()
