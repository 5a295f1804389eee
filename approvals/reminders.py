"""When a pending request nudges people (SPEC §7, issue 18): its approvers once at half its TTL, and the
server's `escalation_channel` (if the registry names one) once at three quarters, before it expires.

The schedule is one sorted set in Redis, `chatops:approvals:reminders`, scored by when each nudge is due;
members are "remind:{id}" and "escalate:{id}". The sweep (one chain for the deployment, but a second chain or
a restarted worker may overlap it) claims each due member with ZREM, which only one caller can win: so
a nudge is given at most once however many workers sweep, and it survives restarts because it lives in
Redis, not in a process. A nudge for a request that was decided meanwhile is dropped when claimed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, cast

import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from approvals.approval import Approval

__all__ = ["REMINDERS_KEY", "Nudge", "ReminderSchedule"]

REMINDERS_KEY = "chatops:approvals:reminders"
REMIND_AT = 0.5  # of the TTL: the approvers' reminder
ESCALATE_AT = 0.75  # of the TTL: the escalation channel, while there is still time to decide

Nudge = Literal["remind", "escalate"]


class ReminderSchedule:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def schedule(self, approval: Approval) -> None:
        ttl = approval.expires_at - approval.created_at
        await self._redis.zadd(
            REMINDERS_KEY,
            {
                f"remind:{approval.id}": approval.created_at + ttl * REMIND_AT,
                f"escalate:{approval.id}": approval.created_at + ttl * ESCALATE_AT,
            },
        )

    async def due(self, now: float) -> list[tuple[Nudge, str]]:
        """The nudges due by `now` that this caller claimed (each is handed to exactly one caller)."""
        found = await self._redis.zrangebyscore(REMINDERS_KEY, "-inf", now, 0, 500)
        members = [str_if_bytes(cast(bytes | str, m)) for m in found]
        if not members:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.zrem(REMINDERS_KEY, member)
            won = await pipe.execute()
        return list(_parsed(m for m, claimed in zip(members, won, strict=True) if claimed))


def _parsed(members: Iterable[str]) -> Iterable[tuple[Nudge, str]]:
    for member in members:
        what, _, approval_id = member.partition(":")
        if what in ("remind", "escalate") and approval_id:
            yield cast(Nudge, what), approval_id
