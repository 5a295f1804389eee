"""The shared registry snapshot: one fetch per TTL deployment-wide, stale-if-error, then a clear refusal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from registry_cache.model import GOVERNANCE_KEY
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def raw_entry(name: str) -> dict[str, Any]:
    return {
        "server": {
            "name": name,
            "remotes": [{"type": "streamable-http", "url": "https://s.example.com/mcp"}],
        },
        "_meta": {GOVERNANCE_KEY: {"status": "active", "allowed_groups": ["*"]}},
    }


class Registry:
    """A controllable fetch function standing in for the HTTP read (tested separately against the fake)."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False
        self.names = ["io.example/presto"]
        self.gate: asyncio.Event | None = None

    async def fetch(self) -> list[dict[str, Any]]:
        self.calls += 1
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 5)
        if self.down:
            raise ConnectionError("connection refused")
        return [raw_entry(n) for n in self.names]


def snapshot(
    r: aioredis.Redis, reg: Registry, clock: Clock, ttl: float = 60, stale: float = 900
) -> SharedSnapshot:
    return SharedSnapshot(r, reg.fetch, ttl_seconds=ttl, stale_max_seconds=stale, clock=clock)


async def test_a_warm_snapshot_is_served_without_fetching(aredis: aioredis.Redis) -> None:
    reg, clock = Registry(), Clock()
    snap = snapshot(aredis, reg, clock)
    assert [e.name for e in (await snap.view()).entries] == ["io.example/presto"]
    clock.now += 59
    reg.names = ["io.example/changed"]
    assert [e.name for e in (await snap.view()).entries] == ["io.example/presto"]
    assert reg.calls == 1
    clock.now += 2
    assert [e.name for e in (await snap.view()).entries] == ["io.example/changed"]
    assert reg.calls == 2


async def test_another_process_sees_the_same_copy(aredis: aioredis.Redis, redis_url: str) -> None:
    reg, clock = Registry(), Clock()
    await snapshot(aredis, reg, clock).view()
    other_client = aioredis.Redis.from_url(redis_url)
    other = snapshot(other_client, Registry(), clock)
    assert [e.name for e in (await other.view()).entries] == ["io.example/presto"]
    await other_client.aclose()


async def test_ten_processes_refreshing_at_once_make_one_fetch(redis_url: str) -> None:
    reg, clock = Registry(), Clock()
    reg.gate = asyncio.Event()
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(10)]
    snaps = [snapshot(c, reg, clock) for c in clients]
    tasks = [asyncio.create_task(s.view()) for s in snaps]
    while reg.calls == 0:
        await asyncio.sleep(0)
    reg.gate.set()
    views = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert reg.calls == 1
    assert all(v.entries[0].name == "io.example/presto" for v in views)
    for c in clients:
        await c.aclose()


async def test_registry_down_serves_stale_then_refuses_with_a_reason(aredis: aioredis.Redis) -> None:
    reg, clock = Registry(), Clock()
    snap = snapshot(aredis, reg, clock, ttl=60, stale=300)
    await snap.view()
    reg.down = True
    clock.now += 61
    info = await snap.current()
    assert info.stale
    assert info.view.entries[0].name == "io.example/presto"
    clock.now += 240  # 301 s old: still inside ttl + stale window
    assert (await snap.current()).stale
    clock.now += 60  # 361 s: past it
    with pytest.raises(RegistryUnavailable, match="unreachable.*connection refused.*refused"):
        await snap.view()


async def test_an_outage_is_not_hammered(aredis: aioredis.Redis) -> None:
    reg, clock = Registry(), Clock()
    snap = snapshot(aredis, reg, clock, ttl=60)
    await snap.view()
    reg.down = True
    clock.now += 61
    for _ in range(20):
        await snap.current()
    assert reg.calls == 2  # the first load and one failed attempt; the next attempt waits a TTL


async def test_no_copy_and_registry_down_says_so(aredis: aioredis.Redis) -> None:
    reg, clock = Registry(), Clock()
    reg.down = True
    with pytest.raises(RegistryUnavailable, match="cannot be reached"):
        await snapshot(aredis, reg, clock).view()


async def test_recovery_after_an_outage(aredis: aioredis.Redis) -> None:
    reg, clock = Registry(), Clock()
    snap = snapshot(aredis, reg, clock, ttl=60, stale=0)
    reg.down = True
    with pytest.raises(RegistryUnavailable):
        await snap.view()
    reg.down = False
    clock.now += 61
    assert (await snap.view()).entries


async def test_a_worker_parent_preloads_the_view_its_jobs_start_with(
    aredis: aioredis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis as sync_redis

    from registry_cache import snapshot as module

    reg, clock = Registry(), Clock()
    await snapshot(aredis, reg, clock).refresh_now()
    monkeypatch.setattr(module, "_PARSED", {})  # a freshly started worker process
    module.preload(sync_redis.Redis.from_url(redis_url))
    await aredis.delete(module.SNAPSHOT_KEY)  # the job must not need to read and parse the copy again
    reg.down = True
    view = await snapshot(aredis, reg, clock).view()
    assert [e.name for e in view.entries] == ["io.example/presto"]


async def test_two_refreshes_at_one_instant_are_two_versions(
    aredis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from registry_cache import snapshot as module

    reg, clock = Registry(), Clock()
    await snapshot(aredis, reg, clock).refresh_now()  # this process parsed presto
    mine = module._PARSED
    monkeypatch.setattr(module, "_PARSED", {})  # another process refreshes at the same clock reading
    reg.names = ["io.example/spark"]
    await snapshot(aredis, reg, clock).refresh_now()
    monkeypatch.setattr(module, "_PARSED", mine)
    assert [e.name for e in (await snapshot(aredis, reg, clock).view()).entries] == ["io.example/spark"]
