from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings

from fixtures.redis_proc import RedisProc

# Property tests: the same examples on every run (a failure reproduces, CI cannot flake on a lucky draw), no
# per-example deadline (a loaded 2-core machine is not a bug). HYPOTHESIS_PROFILE=explore draws fresh ones.
settings.register_profile(
    "chatops", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("explore", deadline=None, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "chatops"))


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
