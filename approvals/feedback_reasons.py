"""The latest 👎 reasons per month for `chatops stats` (issue 19 item 4): what people said was wrong, beside
the tools or the workflow the answer or run used, so owners can read why their estimate may be off.

Who sees them: the operators who run `chatops stats` (it needs REDIS_URL, which already reaches everything).
Reasons are shown without their author, and App Home never shows them: a person's Home has their own
figures only. The text was redacted when stored (approvals.feedback); here it is flattened to one line,
cleared of control and formatting characters (a reason must not drive the operator's terminal) and cut.

A reason counts while its author's vote on that answer or run is still 👎 (the last click counts). It
belongs to the month its turn or run was asked, as its votes do (approvals.impact), else the month it was
given; newest first by when it was given (the turn's time for reasons stored before that was kept).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from approvals.calibration import WORKFLOWS_SERVER

__all__ = ["REASONS_PER_MONTH", "REASON_SHOWN_CHARS", "Reason", "latest_reasons", "reason_rows"]

REASONS_PER_MONTH, REASON_SHOWN_CHARS, ABOUT_MOST = 5, 160, 4
PAGE = 1000
Call = tuple[str, str, str, str, float]  # month, server, tool, feedback id, minutes (approvals.calibration)


@dataclass(frozen=True)
class Reason:
    at: float  # when it was given
    about: tuple[str, ...]  # "workflow restart-failed-dag", "presto.query_history"
    text: str


async def latest_reasons(
    redis: aioredis.Redis,
    months: Collection[str],
    asked: Mapping[str, float],
    calls: Iterable[Call],
    *,
    most: int = REASONS_PER_MONTH,
) -> dict[str, list[Reason]]:
    """Per month asked for: its newest `most` reasons. `asked`: feedback id -> when its turn or run was
    asked, from the audit; `calls`: the counted calls (what each answer or run was about)."""
    about: dict[str, list[tuple[str, str]]] = {}
    for _, server, tool, feedback_id, _ in calls:
        about.setdefault(feedback_id, []).append((server, tool))
    found: dict[str, list[Reason]] = {m: [] for m in months}
    prefix = "chatops:feedback-reason:"
    keys = [str_if_bytes(k) async for k in redis.scan_iter(match=prefix + "*", count=PAGE)]
    for offset in range(0, len(keys), PAGE):
        chunk = [k.removeprefix(prefix) for k in keys[offset : offset + PAGE]]
        async with redis.pipeline(transaction=False) as pipe:
            for feedback_id in chunk:
                pipe.hgetall(prefix + feedback_id)
                pipe.hgetall(f"chatops:feedback-reason-at:{feedback_id}")
                pipe.hgetall(f"chatops:feedback:{feedback_id}")
                pipe.hget(f"chatops:turn:{feedback_id}", "created_at")
            answers = await pipe.execute()
        for i, feedback_id in enumerate(chunk):
            texts, times, votes, created = answers[4 * i : 4 * i + 4]
            asked_at = float(str_if_bytes(created)) if created else asked.get(feedback_id)
            for user, text in texts.items():
                if str_if_bytes(votes.get(user) or b"") != "down":
                    continue  # they changed their mind: the reason no longer stands
                given = times.get(user)
                at = float(str_if_bytes(given)) if given else asked_at
                month = _month(asked_at if asked_at else at)
                if at is not None and month in found:
                    seen = about.get(feedback_id, [])
                    found[month].append(Reason(at, _about(seen), _line(str_if_bytes(text))))
    return {m: sorted(rs, key=lambda r: r.at, reverse=True)[:most] for m, rs in found.items()}


def reason_rows(reasons: Mapping[str, list[Reason]]) -> list[list[str]]:
    """Table rows (month, day given, about, reason), months in order, newest reason first."""
    return [
        [month, datetime.fromtimestamp(r.at, tz=UTC).strftime("%Y-%m-%d"), ", ".join(r.about), r.text]
        for month in sorted(reasons)
        for r in reasons[month]
    ]


def _about(calls: list[tuple[str, str]]) -> tuple[str, ...]:
    named = [f"workflow {tool}" for server, tool in calls if server == WORKFLOWS_SERVER]
    named += [f"{server.rpartition('/')[2]}.{tool}" for server, tool in calls if server != WORKFLOWS_SERVER]
    unique = [_line(n, 60) for n in dict.fromkeys(named)]
    if not unique:
        return ("(no tool calls)",)
    more = [f"+{len(unique) - ABOUT_MOST} more"] if len(unique) > ABOUT_MOST else []
    return (*unique[:ABOUT_MOST], *more)


def _line(text: str, most: int = REASON_SHOWN_CHARS) -> str:
    # isprintable() is False for newlines, ESC and the other controls, and for bidi overrides (Cf).
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= most else flat[: most - 1] + "…"


def _month(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m") if ts else None
