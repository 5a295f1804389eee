"""Registry benchmarks: the warm permission lookup and the cold refresh of a 500-server registry.

(a) Warm lookup: `await snapshot.view()` + `view.servers_for(person, channel)`, as the gateway does on every
    listing and call, against the floor of one bare Redis GET of a small key on the same connection (a warm
    lookup is designed to be exactly one small GET). A and B alternate call by call, the order flipping each
    repeat; the figure is the median over repeats of p50(A)/p50(B). Target: p50 < 1 ms.
    Also measured: the same lookup with 507 servers in the registry, and the first lookup of a process that
    has not parsed the current version yet (GET the blob, JSON-decode, parse every entry).
(b) Cold refresh of 507 servers (the fixture's 7 + `add_synthetic(500)`): `SharedSnapshot.refresh_now()`
    against the bare `fetch_all` alone (the HTTP floor), alternating.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import redis.asyncio as aioredis

from bench.common import Noise, Result, Section, median_ratio, percentile, summary
from fixtures.redis_proc import RedisProc
from fixtures.registry import FakeRegistry
from fixtures.server import serve
from registry_cache.client import fetch_all
from registry_cache.snapshot import SharedSnapshot
from registry_cache.view import Person

__all__ = ["run"]

URL_NAMES = [
    "PRESTO_URL",
    "SPARK_URL",
    "AIRFLOW_URL",
    "LEDGER_URL",
    "STATUSPAGE_URL",
    "HIVE_URL",
    "SEARCH_URL",
]
ALICE = Person("u-alice", "alice@example.com", frozenset({"data-eng", "presto-oncall"}))
CHANNEL = "C0DATAENG"
FLOOR_KEY = "bench:floor"


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


async def _lookup_vs_get(
    snapshot: SharedSnapshot, redis: aioredis.Redis, n: int, repeats: int, noise: Noise, label: str
) -> dict[str, Any]:
    async def lookup() -> None:
        view = await snapshot.view()
        view.servers_for(ALICE, CHANNEL)

    async def bare_get() -> None:
        await redis.get(FLOOR_KEY)

    for _ in range(200):  # warm both paths (connection, memo, code)
        await lookup()
        await bare_get()
    per_repeat = []
    for rep in range(repeats):
        for attempt in range(2):  # a repeat that ran while others were busy is redone once
            noise.wait_quiet(max_wait=3.0)
            a: list[float] = []
            b: list[float] = []
            with noise.run(f"{label} repeat {rep + 1}"):
                started = time.perf_counter()
                for i in range(n):
                    if (i + rep) % 2 == 0:
                        a.append(await _timed(lookup))
                        b.append(await _timed(bare_get))
                    else:
                        b.append(await _timed(bare_get))
                        a.append(await _timed(lookup))
                elapsed = time.perf_counter() - started
            if attempt or not noise.last_noisy():
                break
            noise.discard()
        per_repeat.append(
            {
                "lookup": summary([x * 1e6 for x in a]),
                "get": summary([x * 1e6 for x in b]),
                "seconds": elapsed,
            }
        )
    return {"repeats": per_repeat}


def _lookup_rows(name: str, data: dict[str, Any], target: bool) -> list[Result]:
    reps = data["repeats"]
    p50 = statistics.median(r["lookup"]["p50"] for r in reps)
    p99 = statistics.median(r["lookup"]["p99"] for r in reps)
    get50 = statistics.median(r["get"]["p50"] for r in reps)
    get99 = statistics.median(r["get"]["p99"] for r in reps)
    ratio = median_ratio([(r["lookup"]["p50"], r["get"]["p50"]) for r in reps])
    ratio99 = median_ratio([(r["lookup"]["p99"], r["get"]["p99"]) for r in reps])
    rate = statistics.median(1e6 / r["lookup"]["mean"] for r in reps)
    per_rep = ", ".join(f"{r['lookup']['p50']:.0f}" for r in reps)
    spread = f"p50 per repeat {per_rep} µs"
    return [
        Result(
            name,
            "p50 µs",
            p50,
            get50,
            ratio,
            "< 1000 µs" if target else "",
            (p50 < 1000) if target else None,
            f"baseline: bare Redis GET, same connection; {spread}",
        ),
        Result(name, "p99 µs", p99, get99, ratio99, "", None, ""),
        Result(name, "lookups/s (1 task)", rate, None, None, "", None, "sequential, one connection"),
    ]


async def _refresh_vs_fetch(
    snapshot: SharedSnapshot, fetch: Callable[[], Awaitable[Any]], repeats: int, noise: Noise
) -> dict[str, Any]:
    for _ in range(3):
        await snapshot.refresh_now()
        await fetch()
    a: list[float] = []
    b: list[float] = []
    with noise.run("cold refresh"):
        for rep in range(repeats):
            if rep % 2 == 0:
                a.append(await _timed(snapshot.refresh_now))
                b.append(await _timed(fetch))
            else:
                b.append(await _timed(fetch))
                a.append(await _timed(snapshot.refresh_now))
    return {"refresh_ms": [x * 1e3 for x in a], "fetch_ms": [x * 1e3 for x in b]}


async def _first_read(
    redis: aioredis.Redis, fetch: Callable[[], Awaitable[Any]], repeats: int
) -> list[float]:
    """A process that has not read the current version yet: its first view() parses the whole snapshot.
    (Parsed views are kept per process, so each repeat forgets them first, as a new process would.)"""
    from registry_cache import snapshot as module

    out = []
    for _ in range(repeats):
        module._PARSED.clear()
        fresh = SharedSnapshot(redis, fetch, ttl_seconds=3600, stale_max_seconds=900)
        out.append(await _timed(fresh.view) * 1e3)
    return out


async def _main(repeats: int, n: int) -> Section:
    section = Section("registry")
    noise = Noise()
    urls = {name: f"http://127.0.0.1:{9000 + i}/mcp" for i, name in enumerate(URL_NAMES)}
    registry = FakeRegistry.from_file(urls=urls)
    redis_proc = RedisProc().start()
    try:
        with serve(registry.app) as reg_server:
            redis = aioredis.Redis.from_url(redis_proc.url)
            await redis.set(FLOOR_KEY, "1763949600.123456")  # the size of the version key
            async with httpx2.AsyncClient() as http:

                async def fetch() -> list[dict[str, Any]]:
                    return await fetch_all(http, reg_server.url)

                snapshot = SharedSnapshot(redis, fetch, ttl_seconds=3600, stale_max_seconds=900)
                await snapshot.refresh_now()
                noise.wait_quiet()
                small = await _lookup_vs_get(snapshot, redis, n, repeats, noise, "lookup, 7 servers")
                section.add(*_lookup_rows("registry.lookup (7 servers)", small, target=True))

                registry.add_synthetic(500)
                info = await snapshot.refresh_now()
                entries = len(info.view.entries)
                big = await _lookup_vs_get(snapshot, redis, max(1000, n // 5), repeats, noise, "lookup, 507")
                section.add(*_lookup_rows(f"registry.lookup ({entries} servers)", big, target=False))

                cold = await _refresh_vs_fetch(snapshot, fetch, max(7, 2 * repeats + 1), noise)
                pairs = list(zip(cold["refresh_ms"], cold["fetch_ms"], strict=True))
                refresh50 = statistics.median(cold["refresh_ms"])
                fetch50 = statistics.median(cold["fetch_ms"])
                section.add(
                    Result(
                        f"registry.refresh ({entries} servers)",
                        "ms (median)",
                        refresh50,
                        fetch50,
                        median_ratio(pairs),
                        "",
                        None,
                        f"baseline: bare fetch_all (6 pages of 100); n={len(pairs)} alternating; "
                        f"refresh range {min(cold['refresh_ms']):.0f}–{max(cold['refresh_ms']):.0f} ms",
                    )
                )
                first = await _first_read(redis, fetch, 7)
                section.add(
                    Result(
                        f"registry.first_view ({entries} servers)",
                        "ms (median)",
                        statistics.median(first),
                        statistics.median(b for a, b in pairs) if pairs else None,
                        statistics.median(first) / fetch50 if fetch50 else None,
                        "",
                        None,
                        "a process's first view() of a new version: GET blob + json + parse_entries "
                        "(baseline: fetch_all)",
                    )
                )
                section.details = {
                    "lookup_7": small,
                    f"lookup_{entries}": big,
                    "refresh": cold,
                    "first_view_ms": first,
                    "n": n,
                    "repeats": repeats,
                    "first_view_p50": percentile(first, 50),
                }
            await redis.aclose()
    finally:
        redis_proc.stop()
    section.noise = noise.readings
    return section


def run(*, repeats: int = 3, n: int = 5000) -> Section:
    return asyncio.run(_main(repeats, n))


async def profile_target(profile: Any) -> None:
    """The cold refresh under a profiler (used by `python -m bench registry --profile`)."""
    urls = {name: f"http://127.0.0.1:{9000 + i}/mcp" for i, name in enumerate(URL_NAMES)}
    registry = FakeRegistry.from_file(urls=urls)
    registry.add_synthetic(500)
    redis_proc = RedisProc().start()
    try:
        with serve(registry.app) as reg_server:
            redis = aioredis.Redis.from_url(redis_proc.url)
            async with httpx2.AsyncClient() as http:
                snapshot = SharedSnapshot(
                    redis, lambda: fetch_all(http, reg_server.url), ttl_seconds=3600, stale_max_seconds=900
                )
                await snapshot.refresh_now()
                with profile:
                    for _ in range(10):
                        await snapshot.refresh_now()
            await redis.aclose()
    finally:
        redis_proc.stop()
