"""A turn's Stop, as the loop's `Stop` port: a request recorded by any process (approvals.stops) is seen
at the loop's next safe point, and a pending model call is cancelled within `POLL_SECONDS`."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from approvals.stops import TurnStops
from flows.cancels import raise_if_cancelled

__all__ = ["StopWatch"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25  # one Redis read a quarter second per running turn while the model thinks


class StopWatch:
    def __init__(self, stops: TurnStops, turn_id: str, *, poll_seconds: float = POLL_SECONDS) -> None:
        self._stops = stops
        self._turn_id = turn_id
        self._poll = poll_seconds
        self.by: str | None = None  # the Slack user who stopped it

    async def check(self) -> str | None:
        raise_if_cancelled()  # a safe point: a cancel Python dropped mid-command ends the turn here
        if self.by is None:
            try:
                # Shielded: the loop cancels `wait` when the model answers first, and a Redis command cut
                # off mid-reply leaves its pooled connection unusable (seen: every later turn hung).
                self.by = await asyncio.shield(self._stops.who(self._turn_id))
            except RedisError:  # a Stop is a courtesy: a Redis hiccup must not end the turn
                log.warning("could not read the stop request of turn %s", self._turn_id)
        return f"<@{self.by}>" if self.by else None

    async def wait(self) -> str:
        while (who := await self.check()) is None:
            await asyncio.sleep(self._poll)
        return who
