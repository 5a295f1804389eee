"""What App Home reads and keeps in Redis: each person's recent requests, the time-saved summary of their
audit records (cached a minute; the feedback that calibrates it is read fresh each time), and Slack
permalinks (they never change, so each is asked for once).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from agent.redaction import redact_secrets
from approvals.audit_query import export
from approvals.calibration import calibrated, feedback_id
from approvals.feedback import Feedback

__all__ = ["RECENT_LIMIT", "HomeRecords", "TimeSaved", "period_starts"]

RECENT_LIMIT, RECENT_TTL_SECONDS, SAVED_CACHE_SECONDS = 10, 30 * 86400, 60
SAVED_KINDS = "tool_call,workflow_run,approval_requested"


@dataclass(frozen=True)
class TimeSaved:
    """A person's minutes saved: the owners' estimate, and calibrated by feedback (approvals.calibration:
    only answers and runs not marked unhelpful count), this week and this month."""

    week: float = 0.0
    month: float = 0.0
    week_calibrated: float = 0.0
    month_calibrated: float = 0.0


def period_starts(now: float) -> tuple[float, float]:
    """Monday 00:00 UTC of this week and the 1st 00:00 UTC of this month, as epoch seconds."""
    today = datetime.fromtimestamp(now, tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=today.weekday())).timestamp(), today.replace(day=1).timestamp()


class HomeRecords:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def remember(
        self, team: str, user: str, turn_id: str, channel: str, thread_ts: str, text: str
    ) -> None:
        """Note a request for this person's Home (the newest 10 kept; repeating a turn changes nothing)."""
        key = f"chatops:recent:{team}:{user}"
        flat, _ = redact_secrets(" ".join(text.split())[:200])
        member = json.dumps({"id": turn_id, "channel": channel, "thread_ts": thread_ts, "text": flat})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {member: time.time()}, nx=True)
            pipe.zremrangebyrank(key, 0, -(RECENT_LIMIT + 1))
            pipe.expire(key, RECENT_TTL_SECONDS)
            await pipe.execute()

    async def recent(self, team: str, user: str) -> list[tuple[dict[str, Any], float]]:
        """The remembered requests, newest first, with when each was asked."""
        key = f"chatops:recent:{team}:{user}"
        # redis-py types zrevrange loosely: with scores it is (member, score) pairs.
        rows = cast(list[tuple[bytes, float]], await self._redis.zrevrange(key, 0, -1, withscores=True))
        return [(json.loads(raw), at) for raw, at in rows]

    async def saved(self, user: str, now: float) -> tuple[TimeSaved, dict[str, Any]]:
        """Minutes this person saved this week and this month, by the owners' estimate and calibrated by
        the feedback on each answer and run now; and when each request their records name was seen."""
        week_start, month_start = period_starts(now)
        # v2: minutes per feedback id (a turn's or a run's), so feedback given since is applied when shown.
        cache_key = f"chatops:home-saved:v2:{user}:{int(week_start)}:{int(month_start)}"
        cached = await self._redis.get(cache_key)
        if cached is not None:
            week, month, asked = json.loads(cached)
        else:
            week, month, asked = await self._minutes(user, week_start, month_start)
            await self._redis.set(cache_key, json.dumps([week, month, asked]), ex=SAVED_CACHE_SECONDS)
        verdicts = await Feedback(self._redis).verdicts(sorted({*week, *month} - {""}))
        saved = TimeSaved(
            week=sum(week.values()),
            month=sum(month.values()),
            week_calibrated=calibrated(week, verdicts),
            month_calibrated=calibrated(month, verdicts),
        )
        return saved, dict(asked)

    async def _minutes(
        self, user: str, week_start: float, month_start: float
    ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """From the audit: minutes per feedback id this week and this month (what `chatops stats` counts:
        succeeded tool calls and workflow runs), and when each request was last seen."""
        week: dict[str, float] = {}
        month: dict[str, float] = {}
        asked: dict[str, float] = {}
        async for record in export(
            self._redis, since=min(week_start, month_start), user=user, kind=SAVED_KINDS
        ):
            at, request = float(record.get("time") or 0), str(record.get("request_id") or "")
            if request:
                asked[request] = max(at, asked.get(request, 0.0))
            if record.get("kind") != "approval_requested" and record.get("outcome") == "succeeded":
                minutes, rated = float(record.get("minutes_saved") or 0.0), feedback_id(record)
                for start, found in ((week_start, week), (month_start, month)):
                    if at >= start:
                        found[rated] = found.get(rated, 0.0) + minutes
        return week, month, asked

    async def permalink(self, channel: str, ts: str) -> str | None:
        cached = await self._redis.get(f"chatops:permalink:{channel}:{ts}")
        if cached is None:
            return None
        return str_if_bytes(cached)

    async def keep_permalink(self, channel: str, ts: str, link: str) -> None:
        await self._redis.set(f"chatops:permalink:{channel}:{ts}", link, ex=RECENT_TTL_SECONDS)
