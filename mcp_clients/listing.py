"""Tool listings remembered per (server, caller), so a turn need not wait for every server's `tools/list`.

Listing three servers from a fresh process cost ~90 ms before the first model request could go out: a
connection, a discover probe and every page of every server, every turn. A listing is now kept in Redis
for `LISTING_MAX_AGE_SECONDS` and the gateway revalidates it in the background while the model thinks
(see `GatewaySession`): a tool whose definition changed in the meantime is refused before any call reaches
it, so a stale listing can cost one refused call, never a call to a definition nobody was shown.

Listings are per caller: a server may list different tools to different people (its own gates).

What a live listing withheld of a server (tools its listing got wrong, poisoned definitions, schemas the
model API cannot take) is kept per (server, URL) beside it: a remembered listing holds only the good tools,
so a turn served from memory still reports the rest, and App Home and `chatops registry` show them.

The same store remembers, for `DOWN_SECONDS`, that a server could not be reached at all. Work-horses are
forked per job, so an in-process circuit breaker forgets everything between jobs; without this mark every
turn of every worker paid a connection attempt to a dead server (up to the connect timeout when its host
drops packets) before it could ask the model anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from mcp.types import Tool
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["DOWN_SECONDS", "LISTING_MAX_AGE_SECONDS", "Listing", "ListingCache", "Remembered"]

log = logging.getLogger(__name__)

LISTING_MAX_AGE_SECONDS = 300
DOWN_SECONDS = 30
_PREFIX = "chatops:mcp-tools:"
_DOWN_PREFIX = "chatops:mcp-down:"
_WITHHELD_PREFIX = "chatops:mcp-withheld:"


@dataclass(frozen=True)
class Listing:
    tools: tuple[Tool, ...]
    fetched_at: float


class Remembered(NamedTuple):
    listing: Listing | None  # None: list live
    down: str | None  # why the server was unreachable a moment ago
    withheld: dict[str, str]  # tool -> why, from the server's last live listing


PARSED_MEMO_SIZE = 1024


class ListingCache:
    def __init__(self, redis: Redis, *, max_age: float = LISTING_MAX_AGE_SECONDS) -> None:
        self._redis = redis
        self.max_age = max_age
        # stored tools JSON -> parsed: a long-lived process (the turn pool) reads the same listing turn
        # after turn, and validating every Tool again cost more than the round trip. The same bytes give
        # the same tuple, which lets the gateway keep what it built from it (GatewaySession).
        self._parsed: dict[bytes, tuple[Tool, ...]] = {}

    @staticmethod
    def key(server: str, url: str, caller: str) -> str:
        # The URL is part of the key: a server that moves is listed again at its new address.
        digest = hashlib.sha256(f"{server}\n{url}\n{caller}".encode()).hexdigest()[:32]
        return _PREFIX + digest

    @staticmethod
    def down_key(server: str, url: str) -> str:
        return _DOWN_PREFIX + hashlib.sha256(f"{server}\n{url}".encode()).hexdigest()[:32]

    @staticmethod
    def withheld_key(server: str, url: str) -> str:
        return _WITHHELD_PREFIX + hashlib.sha256(f"{server}\n{url}".encode()).hexdigest()[:32]

    async def lookup(self, key: str, down_key: str, withheld_key: str) -> Remembered:
        """The remembered listing, why the server was unreachable a moment ago, and what its last live
        listing withheld, in one round trip. Redis failing means none of them: the caller lists live."""
        try:
            raw, down, withheld = await self._redis.mget([key, down_key, withheld_key])
        except RedisError as exc:
            log.warning("tool listing cache unavailable: %s", exc)
            return Remembered(None, None, {})
        reason = down.decode(errors="replace") if isinstance(down, bytes) else down
        return Remembered(self._parse(raw), reason, _reasons(withheld))

    async def put_withheld(self, withheld_key: str, withheld: Mapping[str, str]) -> None:
        """What a live listing of one server withheld (tool -> why); nothing withheld clears it."""
        try:
            if withheld:
                await self._redis.set(withheld_key, json.dumps(dict(withheld)), ex=int(self.max_age) + 60)
            else:
                await self._redis.delete(withheld_key)
        except RedisError as exc:
            log.warning("withheld tools not recorded: %s", exc)

    async def withheld(self, servers: Sequence[tuple[str, str]]) -> dict[str, dict[str, str]]:
        """server name -> (tool -> why) for each (server, URL) whose last live listing withheld something."""
        if not servers:
            return {}
        try:
            found = await self._redis.mget([self.withheld_key(name, url) for name, url in servers])
        except RedisError as exc:
            log.warning("withheld tools unavailable: %s", exc)
            return {}
        return {
            name: reasons for (name, _), raw in zip(servers, found, strict=True) if (reasons := _reasons(raw))
        }

    async def mark_down(self, down_key: str, reason: str, *, seconds: int = DOWN_SECONDS) -> None:
        try:
            await self._redis.set(down_key, reason[:200], ex=seconds)
        except RedisError as exc:
            log.warning("server outage not recorded: %s", exc)

    def _parse(self, raw: bytes | str | None) -> Listing | None:
        """Stored as `<fetched_at>\n<tools JSON>`: the tools part is the same bytes from one re-listing to
        the next, so it is parsed once per process (`_parsed`) however often it is written again."""
        if raw is None:
            return None
        blob = raw.encode() if isinstance(raw, str) else raw
        stamp, _, body = blob.partition(b"\n")
        try:
            fetched_at = float(stamp)
        except ValueError:
            return None  # written by another version, or damaged: list live
        if time.time() - fetched_at > self.max_age:
            return None
        tools = self._parsed.get(body)
        if tools is None:
            try:
                tools = tuple(Tool.model_validate(t) for t in json.loads(body))
            except (ValueError, TypeError, ValidationError):
                return None
            if len(self._parsed) >= PARSED_MEMO_SIZE:
                del self._parsed[next(iter(self._parsed))]  # the oldest: a bound, not an LRU
            self._parsed[body] = tools
        return Listing(tools, fetched_at)

    async def put(self, key: str, tools: Sequence[Tool]) -> tuple[Tool, ...]:
        """Remember `tools`. Returned as the very tuple a lookup of the same listing hands out when this
        process has read that listing before (a re-listing that found nothing new), so the gateway reuses
        what it built from it instead of checking every schema again."""
        listed = json.dumps(
            [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools],
            separators=(",", ":"),
            sort_keys=True,
        )
        body = f"{time.time()!r}\n{listed}"
        try:
            await self._redis.set(key, body, ex=int(self.max_age) + 60)
        except RedisError as exc:
            log.warning("tool listing not cached: %s", exc)
        return self._parsed.get(listed.encode(), tuple(tools))


def _reasons(raw: bytes | str | None) -> dict[str, str]:
    try:
        found = json.loads(raw) if raw is not None else {}
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): str(v) for k, v in found.items()}
