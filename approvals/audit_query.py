"""Reading the audit stream (SPEC §9) for `chatops audit export|tail`: filters, paging and following.

Records are read in stream order. The stream id is the time Redis appended the record, while a record's
`time` is the writer's clock; `since` is applied to `time`, and the id only narrows the range, with a margin
for clock skew between machines. Each record comes back with its `stream_id`, so a SIEM can resume.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import str_if_bytes

from approvals.audit import AUDIT_STREAM

__all__ = ["AuditFilter", "export", "parse_since", "stream_position", "tail"]

log = logging.getLogger(__name__)

PAGE = 500
RECONNECT_SECONDS = 2.0
SKEW_MS = 5 * 60 * 1000  # writers' clocks may run behind Redis' by this much and still be found
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float) -> float:
    """A point in time as epoch seconds: relative to `now` (`90s`, `30m`, `12h`, `7d`, `2w`) or an ISO date
    or date-time (`2026-11-01`, `2026-11-01T08:00`, `…Z`, `…+01:00`; without an offset it is UTC)."""
    relative = _RELATIVE.match(text)
    if relative:
        return now - float(relative.group(1)) * _UNITS[relative.group(2).lower()]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time: use an ISO date or date-time (2026-11-01, "
            "2026-11-01T08:00Z) or a relative age such as 30m, 12h, 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # audit times are UTC; a bare date means UTC midnight
    return moment.timestamp()


def _values(value: str | Iterable[str] | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    parts = value.split(",") if isinstance(value, str) else value
    return frozenset(p.strip() for p in parts if p.strip())


@dataclass(frozen=True)
class AuditFilter:
    """Which records to show. Each set is "any of"; an empty set does not filter."""

    since: float | None = None
    users: frozenset[str] = frozenset()  # a Slack user id or an identity `sub`
    servers: frozenset[str] = frozenset()  # a registry name (io.example/presto) or its short name (presto)
    outcomes: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        *,
        since: float | None = None,
        user: str | Iterable[str] | None = None,
        server: str | Iterable[str] | None = None,
        outcome: str | Iterable[str] | None = None,
        kind: str | Iterable[str] | None = None,
    ) -> AuditFilter:
        """Build from CLI-shaped values: a string may list several values separated by commas."""
        return cls(since, _values(user), _values(server), _values(outcome), _values(kind))

    def matches(self, record: Mapping[str, Any]) -> bool:
        if self.since is not None and float(record.get("time") or 0) < self.since:
            return False
        if self.users and not ({record.get("user"), record.get("sub")} & self.users):
            return False
        if self.servers:
            server = str(record.get("server") or "")
            if server not in self.servers and server.rsplit("/", 1)[-1] not in self.servers:
                return False
        if self.outcomes and record.get("outcome") not in self.outcomes:
            return False
        return not (self.kinds and record.get("kind") not in self.kinds)

    @property
    def min_id(self) -> str:
        """The first stream id that can hold a matching record."""
        if self.since is None:
            return "-"
        return f"{max(0, int(self.since * 1000) - SKEW_MS)}-0"


def _decode(entry_id: bytes | str, fields: Mapping[Any, Any]) -> dict[str, Any] | None:
    raw = fields.get(b"record", fields.get("record"))
    try:
        record = json.loads(raw) if raw is not None else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        # Not ours (or damaged): say so, but keep going; one bad entry must not stop a SIEM feed.
        log.warning("audit entry %s is not a JSON record; skipped", str_if_bytes(entry_id))
        return None
    record["stream_id"] = str_if_bytes(entry_id)
    return record


async def _entries(redis: aioredis.Redis, start: str) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
    """(id, record) for every entry from `start` (an XRANGE bound) to the current end, read in pages."""
    while True:
        # The client's stubs type stream replies loosely; entries are (id, {field: value}).
        rows: Any = await redis.xrange(AUDIT_STREAM, min=start, max="+", count=PAGE)
        for entry_id, fields in rows or []:
            yield str_if_bytes(entry_id), _decode(entry_id, fields)
        if len(rows or []) < PAGE:
            return
        start = "(" + str_if_bytes(rows[-1][0])  # exclusive: continue after the last id seen


async def export(
    redis: aioredis.Redis,
    *,
    since: float | None = None,
    user: str | Iterable[str] | None = None,
    server: str | Iterable[str] | None = None,
    outcome: str | Iterable[str] | None = None,
    kind: str | Iterable[str] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Every stored record that matches, oldest first; ends at the stream's current end."""
    filters = AuditFilter.of(since=since, user=user, server=server, outcome=outcome, kind=kind)
    async for _, record in _entries(redis, filters.min_id):
        if record is not None and filters.matches(record):
            yield record


async def stream_position(redis: aioredis.Redis) -> str:
    """The id of the newest record ("0-0" when the stream is empty): follow from here to see only new ones."""
    rows: Any = await redis.xrevrange(AUDIT_STREAM, max="+", min="-", count=1)
    return str_if_bytes(rows[0][0]) if rows else "0-0"


async def tail(
    redis: aioredis.Redis, *, filters: AuditFilter, block_ms: int = 5000, after: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Matching records as they are appended, forever (the caller stops iterating).

    Starts after `after` (a stream id); by default, with `filters.since` set, first replays what is stored
    since then, otherwise starts at the current end. The position is tracked across XREAD calls, so no
    record appended between two reads is missed."""
    if after is None and filters.since is not None:
        after = _just_before(filters.min_id)
        async for entry_id, record in _entries(redis, filters.min_id):
            after = entry_id  # every entry moves the position, matching or not
            if record is not None and filters.matches(record):
                yield record
    position = after if after is not None else await stream_position(redis)
    # An idle XREAD must come back before the client's socket timeout (redis-py's default is 5 s), or every
    # quiet spell would read as a lost Redis: block for at most half of it.
    timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
    if timeout:
        block_ms = max(50, min(block_ms, int(float(timeout) * 500)))
    while True:
        try:
            answer: Any = await redis.xread({AUDIT_STREAM: position}, count=PAGE, block=block_ms)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # A SIEM feed should outlive a Redis restart: resume from the last position seen.
            log.warning("audit tail lost Redis (%s); resuming after %s", type(exc).__name__, position)
            await asyncio.sleep(RECONNECT_SECONDS)
            continue
        for _stream, rows in answer or []:
            for entry_id, fields in rows:
                position = str_if_bytes(entry_id)
                record = _decode(entry_id, fields)
                if record is not None and filters.matches(record):
                    yield record


def _just_before(start: str) -> str:
    """The exclusive XREAD position equivalent to the inclusive XRANGE bound `start`."""
    ms = int(start.partition("-")[0]) if start != "-" else 0
    return f"{ms - 1}-{2**64 - 1}" if ms > 0 else "0-0"
