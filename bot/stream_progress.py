"""Progress while the agent works, shown in a Slack stream: the model's words as it writes them, each
tool call as a task (running, then done or failed with its duration) and the model's plan, when it states
one, as Slack's plan display (bot.plan_display). When the working message is not a stream (streaming
unavailable), the same events drive today's message updates (bot.progress).

Events never hold up the work: they queue, and one task at a time sends them, coalesced, at most one
`chat.appendStream` per `MIN_INTERVAL_SECONDS` (the first at once, so the first words show as soon as the
model writes them). `settle()` waits for the append in flight, if any, and sends nothing more: what is
still queued (the last words, the last task's outcome) is handed to `leave` as chunks, and goes out with
the `chat.stopStream` that ends the stream before the answer replaces its text. One Slack round trip
fewer between the model's last word and the answer (bench/turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agent.plan import Plan
from bot.plan_display import PlanDisplay
from bot.poster import PostError
from bot.progress import SlackProgress, progress_detail
from bot.slack_text import untrusted
from bot.streams import SlackStreams

__all__ = ["Chunks", "StreamProgress"]

MIN_INTERVAL_SECONDS = 0.5  # appendStream is rate limited per message; the text arrives in few, larger parts
MAX_STREAM_CHARS = 12_000  # past this the stream shows tasks only; the answer (split to fit) replaces it

Event = tuple[Any, ...]
Chunks = Sequence[dict[str, Any]]


class StreamProgress:
    def __init__(
        self,
        streams: SlackStreams,
        channel: str,
        working: Awaitable[str],
        is_stream: Callable[[str], bool],
        fallback: SlackProgress,
        *,
        leave: Callable[[str, Chunks], None] = lambda ts, chunks: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`leave(ts, chunks)` is handed what `settle()` did not send, for the stream's stop to carry."""
        self._streams = streams
        self._channel = channel
        self._working = asyncio.ensure_future(working)
        self._is_stream = is_stream
        self._fallback = fallback
        self._leave = leave
        self._clock = clock
        self._events: list[Event] = []
        self._running: dict[tuple[str, str], list[str]] = {}  # (server, tool) -> ids of its running tasks
        self._tasks = 0
        self._plan = PlanDisplay()
        self._said = 0  # characters of text streamed
        self._gap = False  # a new model step: its words start a new paragraph
        self._broken = False  # Slack refused an append: the answer at the end says it all
        self._last = 0.0
        self._sending: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()  # the answer is ready: the last append goes out without waiting

    async def thinking(self) -> None:
        self._gap = self._said > 0 or any(e[0] == "text" for e in self._events)
        await self._fallback.thinking()

    async def text(self, delta: str) -> None:
        if self._gap:
            delta, self._gap = "\n\n" + delta, False
        self._queue(("text", delta))

    async def tool_started(self, server: str, tool: str) -> None:
        self._tasks += 1
        task_id = f"task-{self._tasks}"
        self._running.setdefault((_short(server), tool), []).append(task_id)
        self._queue(("started", server, tool, task_id))

    async def tool_finished(self, server: str, tool: str, ok: bool, latency_ms: float) -> None:
        ids = self._running.get((_short(server), tool)) or ["task-unknown"]
        self._queue(("finished", server, tool, ids.pop(0), ok, latency_ms))

    async def plan(self, plan: Plan) -> None:
        self._queue(("plan", plan))

    async def tool_progress(
        self, server: str, tool: str, progress: float, total: float | None, message: str | None
    ) -> None:
        """A running tool's own progress report: its task's details in a stream, its line otherwise."""
        ids = self._running.get((_short(server), tool))  # progress names the server by its short name
        if ids:
            self._queue(("progress", server, tool, ids[0], progress, total, message))

    async def settle(self) -> None:
        """No update after this one returns: the append in flight is waited for, the rest is left."""
        self._closing.set()
        while self._sending is not None and not self._sending.done():
            await self._sending
        await self._fallback.settle()
        if not self._events or not self._working.done() or self._working.cancelled():
            return
        if self._working.exception() is None and self._is_stream(ts := self._working.result()):
            batch, self._events = self._events, []
            chunks = [] if self._broken else self._chunks(batch)
            if chunks:
                self._leave(ts, chunks)

    def _queue(self, event: Event) -> None:
        if self._closing.is_set():  # settled: the answer is about to replace (or has replaced) the message
            return
        self._events.append(event)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            ts = await self._working
        except PostError:  # no working message to show progress in; the turn itself reports the failure
            self._events.clear()
            return
        stream = self._is_stream(ts)
        while self._events:
            batch, self._events = self._events, []
            if not stream:
                await self._to_fallback(batch)
                continue
            wait = self._last + MIN_INTERVAL_SECONDS - self._clock()
            if self._last and wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), wait)
                batch, self._events = batch + self._events, []
            if self._closing.is_set():  # settling: the stream's stop carries what is left
                self._events = batch + self._events
                return
            chunks = self._chunks(batch)
            self._last = self._clock()
            if chunks and not self._broken:
                self._broken = not await self._streams.append(self._channel, ts, chunks)

    async def _to_fallback(self, batch: list[Event]) -> None:
        for event in batch:
            if event[0] == "started":
                await self._fallback.tool_started(event[1], event[2])
            elif event[0] == "finished":
                await self._fallback.tool_finished(event[1], event[2], event[4], event[5])
            elif event[0] == "progress":
                await self._fallback.tool_progress(event[1], event[2], event[4], event[5], event[6])
            elif event[0] == "plan":
                await self._fallback.plan(event[1])

    def _chunks(self, batch: list[Event]) -> list[dict[str, Any]]:
        """Consecutive words as one markdown chunk, each tool event as a task update, a plan as what changed
        in it, in order."""
        chunks: list[dict[str, Any]] = []
        for event in batch:
            if event[0] == "text":
                room = MAX_STREAM_CHARS - self._said
                words = event[1][: max(0, room)]
                self._said += len(words)
                if not words:
                    continue
                if chunks and chunks[-1]["type"] == "markdown_text":
                    chunks[-1]["text"] += words
                else:
                    chunks.append({"type": "markdown_text", "text": words})
            elif event[0] == "plan":
                chunks.extend(self._plan.chunks(event[1]))
            else:
                chunks.append(_task(event))
        for chunk in chunks:  # the model's words are untrusted: escaped and secrets redacted, per batch
            if chunk["type"] == "markdown_text":
                chunk["text"] = str(untrusted(chunk["text"], markdown=False))
        return chunks


def _short(server: str) -> str:
    return server.split("/", 1)[-1]


def _task(event: Event) -> dict[str, Any]:
    server, tool, task_id = event[1], event[2], event[3]
    title = f"{untrusted(_short(server), markdown=False)} · {untrusted(tool, markdown=False)}"
    if event[0] == "started":
        return {"type": "task_update", "id": task_id, "title": title, "status": "in_progress"}
    if event[0] == "progress":
        detail = str(untrusted(progress_detail(event[4], event[5], event[6]), markdown=False))
        return {
            "type": "task_update",
            "id": task_id,
            "title": title,
            "status": "in_progress",
            "details": detail,
        }
    ok, ms = event[4], event[5]
    took = f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"
    status = "complete" if ok else "error"
    return {"type": "task_update", "id": task_id, "title": title, "status": status, "details": took}
