"""People's thumbs up/down on an answer or a workflow run's result: one vote per person per feedback id (a
turn's id or a run's), the last click counting; after a 👎, the person's optional reason, stored beside the
vote (secrets redacted, capped) with when it was given.

Keys: `chatops:feedback:{id}` (user -> up|down), `chatops:feedback-reason:{id}` (user -> reason) and
`chatops:feedback-reason-at:{id}` (user -> epoch seconds; reasons stored before it was kept have none).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from agent.redaction import redact_secrets
from approvals.calibration import Verdict, verdict

__all__ = ["REASON_MAX_CHARS", "Feedback", "tally"]

REASON_MAX_CHARS = 500


def tally(votes: Iterable[bytes | str]) -> tuple[int, int]:
    """(up, down) among one id's stored votes."""
    said = [str_if_bytes(v) for v in votes]
    return said.count("up"), said.count("down")


class Feedback:
    def __init__(self, redis: aioredis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock

    async def vote(self, turn_id: str, user: str, vote: str) -> None:
        await self._redis.hset(f"chatops:feedback:{turn_id}", user, vote)

    async def explain(self, turn_id: str, user: str, reason: str) -> None:
        """Why `user` found this turn's answer (or run's result) unhelpful (the last reason given counts)."""
        text = redact_secrets(reason.strip())[0][:REASON_MAX_CHARS]
        if text:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(f"chatops:feedback-reason:{turn_id}", user, text)
                pipe.hset(f"chatops:feedback-reason-at:{turn_id}", user, str(self._clock()))
                await pipe.execute()

    async def reasons(self, turn_id: str) -> dict[str, str]:
        raw = await self._redis.hgetall(f"chatops:feedback-reason:{turn_id}")
        return {str_if_bytes(k): str_if_bytes(v) for k, v in raw.items()}

    async def verdicts(self, ids: Sequence[str]) -> dict[str, Verdict]:
        """Each id's verdict from its votes now (approvals.calibration.verdict; None when unrated)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for feedback_id in ids:
                pipe.hvals(f"chatops:feedback:{feedback_id}")
            answers = await pipe.execute()
        return {i: verdict(*tally(votes)) for i, votes in zip(ids, answers, strict=True)}
