"""The model's bill per turn: an audit record, running totals per person and month and per hour, and the
monthly table `chatops stats` prints.

Each answered (or paused, or failed) turn writes one `model_usage` audit record: its tokens as billed
(input, cache writes by TTL, cache reads, output), the dollar estimate from the price table in settings,
and the servers whose tools it called (`server`, comma-separated; stats split the turn's cost evenly over
them, "(no tool)" when it called none). The same figures go into two Redis hashes so App Home and `doctor`
need not scan the audit: `chatops:usage:user:<user>:<YYYY-MM>` (kept 400 days) and
`chatops:usage:hour:<epoch hour>` (kept two days).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from agent.usage import Price, Usage, dollars
from approvals.audit import Audit, AuditRecord, turn_record
from approvals.turns import Turn

__all__ = [
    "NO_TOOL",
    "Bill",
    "UsageBook",
    "add_bill",
    "bill_lines",
    "cache_report",
    "last_hour",
    "usage_of",
]

NO_TOOL = "(no tool)"
MICRO = 1_000_000  # dollars are kept in micro-dollars in Redis (HINCRBY is integer)
_USER_KEEP = 400 * 86_400
_HOUR_KEEP = 2 * 86_400


def usage_of(record: Mapping[str, Any]) -> Usage:
    raw = record.get("usage")
    if not isinstance(raw, Mapping):
        return Usage()
    return Usage(**{k: int(v) for k, v in raw.items() if k in Usage().as_dict() and isinstance(v, int)})


@dataclass
class Bill:
    turns: int = 0
    usage: Usage = field(default_factory=Usage)
    dollars: float = 0.0

    def add(self, usage: Usage, cost: float, share: float = 1.0) -> None:
        self.turns += 1
        scaled = Usage(**{k: round(v * share) for k, v in usage.as_dict().items()})
        self.usage += scaled
        self.dollars += cost * share


def add_bill(total: Bill, by_server: dict[str, Bill], record: Mapping[str, Any]) -> None:
    """Count one `model_usage` record into a month's total and its servers."""
    if record.get("kind") != "model_usage":
        return
    usage, cost = usage_of(record), float(record.get("cost_usd") or 0.0)
    total.add(usage, cost)
    servers = [s for s in str(record.get("server") or "").split(",") if s] or [NO_TOOL]
    for server in servers:
        by_server.setdefault(server, Bill()).add(usage, cost, 1.0 / len(servers))


def _cells(bill: Bill) -> list[str]:
    u = bill.usage
    tokens = [u.input, u.cache_write, u.cache_read, u.output]
    return [
        f"{bill.turns:,}",
        *(f"{t:,}" for t in tokens),
        f"{u.cache_hit_ratio * 100:.0f}%",
        f"{bill.dollars:,.2f}",
    ]


BILL_HEADER = ["Turns", "Input", "Cache write", "Cache read", "Output", "Cache hit", "USD"]


def bill_lines(rows: Sequence[tuple[list[str], Bill]]) -> list[list[str]]:
    return [[*keys, *_cells(bill)] for keys, bill in rows]


def usage_record(
    turn: Turn, sub: str, usage: Usage, cost: float, servers: Sequence[str], model: str
) -> AuditRecord:
    record = turn_record(turn, sub, "model_usage", "", server=",".join(dict.fromkeys(servers)), detail=model)
    return AuditRecord(**{**record.to_json(), "usage": usage.as_dict(), "cost_usd": round(cost, 6)})


class UsageBook:
    """Records a turn's bill (audit and running totals) and reads the totals back."""

    def __init__(self, redis: aioredis.Redis, audit: Audit, model: str, price: Price | None) -> None:
        self._redis, self._audit, self._model, self._price = redis, audit, model, price

    def cost(self, usage: Usage) -> float:
        return dollars(usage, self._price) if self._price is not None else 0.0

    async def record(
        self, turn: Turn, sub: str, usage: Usage, servers: Sequence[str], now: float | None = None
    ) -> None:
        if not usage.prompt and not usage.output:
            return  # no model call was answered: nothing was billed
        now = time.time() if now is None else now
        cost = self.cost(usage)
        await self._audit.record(usage_record(turn, sub, usage, cost, servers, self._model))
        month = time.strftime("%Y-%m", time.gmtime(now))
        fields = {**usage.as_dict(), "turns": 1, "micro_usd": round(cost * MICRO)}
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, keep in (
                (f"chatops:usage:user:{turn.user}:{month}", _USER_KEEP),
                (f"chatops:usage:hour:{int(now // 3600)}", _HOUR_KEEP),
            ):
                for name, value in fields.items():
                    if value:
                        pipe.hincrby(key, name, value)
                pipe.expire(key, keep)
            await pipe.execute()

    async def own(self, user: str, now: float | None = None) -> tuple[Usage, int, float]:
        """(usage, turns, dollars) of `user` this month."""
        month = time.strftime("%Y-%m", time.gmtime(time.time() if now is None else now))
        return await _read(self._redis, f"chatops:usage:user:{user}:{month}")


async def _read(redis: aioredis.Redis, key: str) -> tuple[Usage, int, float]:
    raw: Any = await redis.hgetall(key)
    values = {str_if_bytes(k): int(v) for k, v in (raw or {}).items()}
    usage = Usage(**{k: values.get(k, 0) for k in Usage().as_dict()})
    return usage, values.get("turns", 0), values.get("micro_usd", 0) / MICRO


async def last_hour(redis: aioredis.Redis, now: float | None = None) -> tuple[Usage, int]:
    """(usage, turns) of the current and the previous clock hour: at least the last hour."""
    hour = int((time.time() if now is None else now) // 3600)
    current, turns, _ = await _read(redis, f"chatops:usage:hour:{hour}")
    previous, before, _ = await _read(redis, f"chatops:usage:hour:{hour - 1}")
    return current + previous, turns + before


def cache_report(usage: Usage, turns: int) -> str:
    """`doctor`'s line: how much of the last hour's prompt was read from the cache."""
    if not turns:
        return "no model requests in the last hour"
    return (
        f"{usage.cache_hit_ratio * 100:.0f}% of the input of {turns} turns in the last hour was read from "
        f"the cache ({usage.cache_read:,} of {usage.prompt:,} tokens; {usage.cache_write:,} written)"
    )
