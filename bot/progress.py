"""Progress in Slack while the agent works: one message in the thread, updated at most once a second."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from bot.blocks import ProgressLine, progress_message
from bot.poster import Poster, PostError

__all__ = ["SlackProgress"]

MIN_INTERVAL_SECONDS = (
    1.0  # chat.update is Tier 3 (~50/min); one update a second per thread stays well inside
)


class SlackProgress:
    def __init__(
        self, poster: Poster, channel: str, ts: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._poster = poster
        self._channel = channel
        self._ts = ts
        self._clock = clock
        self._lines: list[ProgressLine] = []
        self._last = 0.0
        self._dirty = False

    async def thinking(self) -> None:
        return None

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

    async def _maybe_flush(self) -> None:
        self._dirty = True
        if self._clock() - self._last >= MIN_INTERVAL_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self._last = self._clock()
        message = progress_message(self._lines)
        # Progress is a courtesy; the answer itself is what must arrive.
        with contextlib.suppress(PostError):
            await self._poster.update(self._channel, self._ts, text=message.text, blocks=message.blocks)
