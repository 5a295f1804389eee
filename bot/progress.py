"""Progress in Slack while the agent works: one message in the thread, updated at most once a second.

Updates never hold up the work they describe: each goes out as a task of its own (one at a time, in order)
while the tool runs, and `settle()` waits for the last one before the answer replaces the message, so a
late progress update can never overwrite the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from agent.plan import Plan
from bot.blocks import ProgressLine, progress_message
from bot.plan_display import plan_lines
from bot.poster import Poster, PostError

__all__ = ["SlackProgress", "progress_detail"]

MIN_INTERVAL_SECONDS = (
    1.0  # chat.update is Tier 3 (~50/min); one update a second per thread stays well inside
)


class SlackProgress:
    def __init__(
        self,
        poster: Poster,
        channel: str,
        ts: str | Awaitable[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        stop_id: str | None = None,
    ) -> None:
        """`ts` is the progress message's, or an awaitable of it (the message may still be being posted)."""
        self._poster = poster
        self._channel = channel
        self._ts = ts
        self._clock = clock
        self._stop_id = stop_id  # the turn a Stop button under the lines stops
        self._lines: list[ProgressLine] = []
        self._plan: Plan | None = None  # the model's, shown above the tool calls
        self._last = 0.0
        self._dirty = False
        self._sending: asyncio.Task[None] | None = None
        self._trailing: asyncio.Future[None] | None = None

    async def thinking(self) -> None:
        """The model is about to be asked: nothing to show (the message already says the bot is on it)."""

    async def text(self, delta: str) -> None:
        """Message updates show the steps, not the words: the answer replaces the message when done."""

    async def tool_started(self, server: str, tool: str) -> None:
        self._lines.append(ProgressLine(server.split("/", 1)[-1], tool, "running", None))
        await self._maybe_flush()

    async def tool_finished(self, server: str, tool: str, ok: bool, latency_ms: float) -> None:
        short = server.split("/", 1)[-1]
        for i, line in enumerate(self._lines):
            if line.server_short == short and line.tool == tool and line.state == "running":
                self._lines[i] = ProgressLine(short, tool, "ok" if ok else "failed", latency_ms)
                break
        await self._maybe_flush()

    async def plan(self, plan: Plan) -> None:
        self._plan = plan
        await self._maybe_flush()

    async def tool_progress(
        self, server: str, tool: str, progress: float, total: float | None, message: str | None
    ) -> None:
        """A running tool's own progress report: shown on its line, throttled like the rest."""
        short = server.split("/", 1)[-1]
        for i, line in enumerate(self._lines):
            if line.server_short == short and line.tool == tool and line.state == "running":
                self._lines[i] = ProgressLine(
                    short, tool, "running", None, progress_detail(progress, total, message)
                )
                break
        else:
            return
        await self._maybe_flush()

    async def _maybe_flush(self) -> None:
        self._dirty = True
        busy = self._sending is not None and not self._sending.done()
        if not busy and self._clock() - self._last >= MIN_INTERVAL_SECONDS:
            self._last = self._clock()
            self._sending = asyncio.ensure_future(self.flush())
        elif self._trailing is None or self._trailing.done():
            # Held back by the throttle: shown once the interval is over, even if nothing else happens by
            # then (a long tool's progress report may be the last news for a while).
            self._trailing = asyncio.ensure_future(self._after_interval())

    async def _after_interval(self) -> None:
        while self._dirty:
            await asyncio.sleep(max(0.05, self._last + MIN_INTERVAL_SECONDS - self._clock()))
            if self._sending is not None and not self._sending.done():
                await asyncio.shield(self._sending)  # cancelling this wait must not cancel the update
            elif self._dirty and self._clock() - self._last >= MIN_INTERVAL_SECONDS:
                self._last = self._clock()
                self._sending = asyncio.ensure_future(self.flush())

    async def settle(self) -> None:
        """Wait for the update in flight, if any (call before the answer replaces the message); one still
        held back by the throttle is dropped: the answer replaces the message anyway."""
        if self._trailing is not None:
            self._trailing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trailing
        if self._sending is not None:
            await self._sending

    async def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self._last = self._clock()
        message = progress_message(self._lines, stop_id=self._stop_id, head=plan_lines(self._plan))
        if not isinstance(self._ts, str):
            self._ts = await self._ts
        # Progress is a courtesy; the answer itself is what must arrive.
        with contextlib.suppress(PostError):
            await self._poster.update(self._channel, self._ts, text=message.text, blocks=message.blocks)


def progress_detail(progress: float, total: float | None, message: str | None) -> str:
    """ "40% · rebuilding": the share done when the server says of how much, else its count, and its words."""
    if total is not None and total > 0 and 0 <= progress <= total:
        done = f"{progress / total:.0%}"
    else:
        done = f"{progress:g}"
    words = " ".join((message or "").split())
    return f"{done} · {words}" if words else done
