"""One registry snapshot in Redis, shared by every process of the deployment (SPEC §6 "Cache").

- Fresh for REGISTRY_TTL_SECONDS after it was fetched.
- At most one fetch per TTL for the whole deployment: the first reader that finds the copy old takes an
  attempt marker (`SET NX PX ttl`) and fetches; everyone else keeps serving what is there. The marker is not
  released after the attempt, so a registry outage is not hammered by every request either.
- While the registry is down the last good copy serves, flagged stale, until it is REGISTRY_STALE_MAX_SECONDS
  past its freshness; after that every caller gets `RegistryUnavailable`, whose message says why.
- Each process keeps the parsed view of the version it last read and re-reads only when the version key
  changes, so a warm lookup is one small GET. The parsed view is kept per process, not per client: a job
  builds its clients afresh, and a forking worker's parent calls `preload` before each fork so that the
  job starts with the current view already parsed (with 500 servers, parsing is tens of milliseconds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from registry_cache.model import parse_entries
from registry_cache.view import RegistryView

__all__ = ["RegistryUnavailable", "SharedSnapshot", "SnapshotInfo", "preload"]

log = logging.getLogger(__name__)

SNAPSHOT_KEY = "chatops:registry:snapshot"
VERSION_KEY = "chatops:registry:version"
ATTEMPT_KEY = "chatops:registry:attempt"
ERROR_KEY = "chatops:registry:error"
FIRST_FILL_WAIT_SECONDS = 15.0

# KEYS[1] attempt key; ARGV: now, ttl, a safety expiry in ms so an abandoned marker cannot linger.
_TAKE_ATTEMPT = """
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""

Fetch = Callable[[], Awaitable[list[Any]]]

# Parsed views by (Redis server, version): shared by every SharedSnapshot of this process.
_PARSED: dict[tuple[str, str], SnapshotInfo] = {}


class RegistryUnavailable(Exception):
    """No registry copy may be used; the message tells the person why and since when."""


@dataclass(frozen=True)
class SnapshotInfo:
    view: RegistryView
    fetched_at: float
    stale: bool
    age_seconds: float


def _where(kwargs: dict[str, Any]) -> str:
    return f"{kwargs.get('host')}:{kwargs.get('port')}:{kwargs.get('path')}/{kwargs.get('db', 0)}"


def _parse(blob: bytes | str) -> SnapshotInfo:
    data = json.loads(blob)
    entries, skipped = parse_entries(data["entries"])
    return SnapshotInfo(RegistryView(entries, skipped), float(data["fetched_at"]), False, 0.0)


def _remember(where: str, version: str, info: SnapshotInfo) -> None:
    for key in [k for k in _PARSED if k[0] == where and k[1] != version]:
        del _PARSED[key]  # one version per Redis server is all a process needs
    _PARSED[(where, version)] = info


def preload(connection: redis.Redis) -> None:
    """Parse the current snapshot into this process's memory if it is not there yet (a forking worker's
    parent, before each fork). Costs one GET when nothing changed; never raises for Redis trouble."""
    where = _where(connection.connection_pool.connection_kwargs)
    try:
        version = connection.get(VERSION_KEY)
        if version is None or (where, str_if_bytes(version)) in _PARSED:
            return
        blob = connection.get(SNAPSHOT_KEY)
    except redis.RedisError as exc:
        log.info("registry view not preloaded: %s", exc)
        return
    if blob is not None:
        _remember(where, str_if_bytes(version), _parse(blob))


class SharedSnapshot:
    def __init__(
        self,
        redis: aioredis.Redis,
        fetch: Fetch,
        *,
        ttl_seconds: float,
        stale_max_seconds: float,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self._redis = redis
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._stale_max = stale_max_seconds
        self._clock = clock
        self._on_event = on_event or (lambda _event: None)
        self._where = _where(redis.connection_pool.connection_kwargs)

    async def current(self) -> SnapshotInfo:
        """The view to decide with now, refreshing it if it is due. Raises `RegistryUnavailable`."""
        info = await self._read()
        now = self._clock()
        if info is not None and now - info.fetched_at < self._ttl:
            self._on_event("hit")
            return self._aged(info, now)
        if await self._take_attempt(now):
            fresh = await self._refresh(now)
            if fresh is not None:
                return fresh
        elif info is None:
            info = await self._wait_for_first_fill()
        if info is not None and now - info.fetched_at < self._ttl + self._stale_max:
            self._on_event("stale")
            return self._aged(info, now)
        self._on_event("unavailable")
        raise RegistryUnavailable(await self._unavailable_message(info, now))

    async def view(self) -> RegistryView:
        return (await self.current()).view

    async def refresh_now(self) -> SnapshotInfo:
        """Fetch regardless of age (operators' `chatops registry --refresh`, and tests)."""
        now = self._clock()
        fresh = await self._refresh(now)
        if fresh is None:
            raise RegistryUnavailable(await self._unavailable_message(await self._read(), now))
        return fresh

    async def _take_attempt(self, now: float) -> bool:
        """Atomically claim the right to fetch: granted when no attempt was made within the last TTL.
        Times come from our clock (not Redis' expiry) so that every process agrees on one timeline."""
        granted = await self._redis.eval(
            _TAKE_ATTEMPT, 1, ATTEMPT_KEY, repr(now), repr(self._ttl), str(max(1, int(self._ttl * 2000)))
        )
        return bool(granted)

    async def _refresh(self, now: float) -> SnapshotInfo | None:
        try:
            raw = await self._fetch()
        except Exception as exc:  # any failure to read the registry is an outage, whatever its type
            log.warning("registry refresh failed: %s", exc)
            await self._redis.set(ERROR_KEY, json.dumps({"at": now, "error": str(exc)[:300]}))
            self._on_event("failure")
            return None
        entries, skipped = parse_entries(raw)
        for s in skipped:
            log.warning("registry entry skipped: %s: %s", s.name, s.reason)
        blob = json.dumps({"fetched_at": now, "entries": raw}, separators=(",", ":"))
        # Unique per refresh, not just per instant: processes key their parsed views by it, and two
        # refreshes at one instant (fake clocks, a flushed Redis) must never look like the same copy.
        version = f"{now:.6f}-{secrets.token_hex(6)}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(SNAPSHOT_KEY, blob)
            pipe.set(VERSION_KEY, version)
            pipe.delete(ERROR_KEY)
            await pipe.execute()
        info = SnapshotInfo(RegistryView(entries, skipped), now, stale=False, age_seconds=0.0)
        _remember(self._where, version, info)
        self._on_event("refresh")
        return info

    async def _read(self) -> SnapshotInfo | None:
        version = await self._redis.get(VERSION_KEY)
        if version is None:
            return None
        version = str_if_bytes(version)
        known = _PARSED.get((self._where, version))
        if known is not None:
            return known
        blob = await self._redis.get(SNAPSHOT_KEY)
        if blob is None:
            return None
        info = _parse(blob)
        _remember(self._where, version, info)
        return info

    async def _wait_for_first_fill(self) -> SnapshotInfo | None:
        # Another process is fetching the very first copy; waiting briefly beats refusing the request.
        deadline = time.monotonic() + FIRST_FILL_WAIT_SECONDS
        while time.monotonic() < deadline:
            info = await self._read()
            if (
                info is not None
                or not await self._redis.exists(ATTEMPT_KEY)
                or await self._redis.exists(ERROR_KEY)
            ):
                return info
            await asyncio.sleep(0.05)
        return None

    def _aged(self, info: SnapshotInfo, now: float) -> SnapshotInfo:
        age = max(0.0, now - info.fetched_at)
        return SnapshotInfo(info.view, info.fetched_at, stale=age >= self._ttl, age_seconds=age)

    async def _unavailable_message(self, info: SnapshotInfo | None, now: float) -> str:
        raw = await self._redis.get(ERROR_KEY)
        cause = json.loads(raw)["error"] if raw else "no copy has been fetched yet"
        if info is None:
            return f"The MCP registry cannot be reached ({cause}), so no tools can be used right now."
        minutes = int((now - info.fetched_at) // 60)
        return (
            f"The MCP registry has been unreachable ({cause}) and its last good copy is {minutes} min old, "
            "older than this deployment allows, so tool calls are refused until it is back."
        )
