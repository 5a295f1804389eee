"""Admission: whether a request is run at all. Too long or empty is refused at once; so is a person's
request beyond their per-minute limit (ACCEPTANCE 41), counted in a sliding minute."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from approvals.turns import Turn
from flows.ports import Refusal

__all__ = ["Admission", "RateWindow"]

WINDOW_SECONDS = 60.0


class RateWindow(Protocol):
    """Requests counted in a sliding window (approvals.tallies.Tallies)."""

    async def in_window(self, name: str, member: str, now: float, seconds: float) -> int: ...


class Admission:
    def __init__(
        self,
        window: RateWindow,
        *,
        per_minute: int,
        max_chars: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._window = window
        self._per_minute = per_minute
        self._max_chars = max_chars
        self._clock = clock

    async def refusal(self, turn: Turn) -> Refusal | None:
        """Why `turn` is not run, or None. Every non-empty request counts towards its person's limit, even
        one from someone not linked yet."""
        if len(turn.text) > self._max_chars:
            return Refusal("too_long", size=len(turn.text), limit=self._max_chars)
        if not turn.text.strip():
            return Refusal("empty")
        counted = await self._window.in_window(
            f"{turn.team}:{turn.user}", turn.id, self._clock(), WINDOW_SECONDS
        )
        if counted > self._per_minute:
            return Refusal("rate_limited")
        return None
