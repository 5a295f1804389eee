"""A turn in Slack (flows.ports.TurnOutput, RecoveryOutput): the eyes, the working message, progress, the
answer, the Connect prompt, and what a refused or lost request is told, in Slack's words.

The working message carries a marker derived from the turn and its first attempt, so a recovery (its
worker died) finds the dead attempt's message and continues in it: one answer in the thread. Where Slack
streams, the working message is a stream (bot.streams): the model's words and its tool calls appear in it
as they happen; it is stopped (and marked) before the answer replaces its text, and a recovery stops the
dead attempt's stream and finishes in it. Where streaming is unavailable, it is today's posted message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

import redis.asyncio as aioredis

from agent.attachments import FileRef
from agent.loop import Result
from approvals.assistant_threads import AssistantThreads
from approvals.home_records import HomeRecords
from approvals.turns import Turn, base_attempt
from bot import blocks
from bot.assistant import AssistantStatus
from bot.delivery import Delivery
from bot.poster import Posted, Poster, PostError
from bot.progress import SlackProgress
from bot.slack_text import Mrkdwn, code, trusted, untrusted
from bot.stream_progress import Chunks, StreamProgress
from bot.streams import SlackStreams
from flows.ports import Refusal

__all__ = ["GAVE_UP", "SlackTurnOutput", "refusal_text", "working_marker"]

log = logging.getLogger(__name__)

GAVE_UP = "I couldn't finish this request: I tried {n} times and each try was cut short. Please ask me again."
CONNECT_REASON = "Your question needs the tools your account gives you access to."


def _in_dm_thread(turn: Turn) -> bool:
    """Assistant threads are DM threads; only those are worth a Redis look-up."""
    return turn.channel_type == "im" and turn.thread_ts != turn.ts


def working_marker(turn_id: str, attempt: str) -> str:
    """The marker of an attempt's "working" message; a recovery finds the dead attempt's by it."""
    return f"{turn_id}:{base_attempt(attempt)}:working"


def refusal_text(refusal: Refusal) -> str:
    if refusal.reason == "too_long":
        return (
            f"That message is {refusal.size:,} characters; I take at most {refusal.limit:,}. "
            "Please shorten it or attach the details as a file."
        )
    return {
        "empty": "What would you like me to look into?",
        "rate_limited": "You've asked me a lot in the last minute. Give me a moment, then ask again.",
        "unlinked": "I can't continue: your account link has ended. Connect again and ask me.",
    }[refusal.reason]


_WHY_REFUSED = {
    "type": "I read text files and images (PNG, JPEG, GIF, WebP) only",
    "host": "it is not on Slack's file host",
    "too_large": "it is larger than the 5 MB an image may be",
    "too_many": "I read at most 10 files per message",
    "unreadable": "I couldn't download it",
    "not_image": "it is not a PNG, JPEG, GIF or WebP image",
}


def files_refused_text(refused: Sequence[tuple[FileRef, str]]) -> Mrkdwn:
    """Our wording; each file's name is untrusted (shown as inline code, escaped)."""
    lines = [f"• {code(ref.name)}: {_WHY_REFUSED.get(why, 'I could not read it')}" for ref, why in refused]
    return trusted("I'll answer without these attached files:\n" + "\n".join(lines))


class SlackTurnOutput:
    def __init__(
        self,
        poster: Poster,
        records: HomeRecords,
        *,
        redis: aioredis.Redis | None = None,
        streaming: bool = True,
    ) -> None:
        self._poster = poster
        self._records = records  # App Home's list of recent requests
        # Streams need Redis (their records survive the worker); without it, message updates as before.
        self._streams = SlackStreams(poster, redis, enabled=streaming)
        self._live: dict[str, str] = {}  # ts of this process's open streams -> their working marker
        self._tails: dict[str, Chunks] = {}  # ts of an open stream -> what its progress left for the stop
        # Assistant threads (bot.assistant) are known from Redis; without it, none are.
        self._assistant = AssistantStatus(poster, AssistantThreads(redis)) if redis is not None else None

    async def remember(self, turn: Turn) -> None:
        await self._records.remember(turn.team, turn.user, turn.id, turn.channel, turn.thread_ts, turn.text)

    async def eyes(self, turn: Turn, *, on: bool) -> None:
        await self._poster.react(turn.channel, turn.ts, "eyes", remove=not on)
        if self._assistant is not None and _in_dm_thread(turn):
            if on:
                await self._assistant.working(turn.channel, turn.thread_ts, turn.text)
            else:
                await self._assistant.done(turn.channel, turn.thread_ts)

    async def working(self, turn: Turn, attempt: str) -> str:
        if attempt != base_attempt(attempt):
            found = await self._find_working(turn, attempt)
            if found is not None:
                return found.ts
        marker = working_marker(turn.id, attempt)
        streamed = await self._streams.start(turn, marker)
        if streamed is not None:
            self._live[streamed] = marker
            return streamed
        working = blocks.working_message(stop_id=turn.id)
        posted = await self._poster.post(
            turn.channel,
            text=working.text,
            blocks=working.blocks,
            thread_ts=turn.thread_ts,
            marker=marker,
        )
        return posted.ts

    def progress(self, turn: Turn, working: Awaitable[str]) -> StreamProgress:
        working = asyncio.ensure_future(working)  # awaited by both ways of showing progress
        updates = SlackProgress(self._poster, turn.channel, working, stop_id=turn.id)
        return StreamProgress(
            self._streams,
            turn.channel,
            working,
            self._live.__contains__,
            updates,
            leave=self._tails.__setitem__,
        )

    async def unavailable(self, turn: Turn, working: str, reason: str) -> None:
        await self._end_stream(turn, working)
        if self._assistant is not None and _in_dm_thread(turn):
            await self._assistant.done(turn.channel, turn.thread_ts)
        await self._poster.update(turn.channel, working, text=untrusted(reason))

    async def deliver(
        self, turn: Turn, working: str, result: Result, seconds: float, attempt: str, *, private: bool
    ) -> None:
        await self._end_stream(turn, working)
        if private:
            await Delivery(self._poster).private(turn, working, result, seconds)
        else:
            await Delivery(self._poster).public(turn, working, result, seconds, attempt)

    async def connect(self, turn: Turn, url: str) -> None:
        prompt = blocks.connect_prompt(url, reason=CONNECT_REASON)
        await self._poster.ephemeral(
            turn.channel, turn.user, text=prompt.text, blocks=prompt.blocks, thread_ts=turn.thread_ts
        )

    async def connect_server(self, turn: Turn, short_name: str, url: str, *, step_up: bool) -> None:
        prompt = blocks.server_connect_prompt(url, short_name=short_name, step_up=step_up)
        await self._poster.ephemeral(
            turn.channel, turn.user, text=prompt.text, blocks=prompt.blocks, thread_ts=turn.thread_ts
        )

    async def refuse(self, turn: Turn, refusal: Refusal, *, marker: str) -> None:
        await self._say(turn, blocks.error_message(refusal_text(refusal)), marker=f"{turn.id}:{marker}")

    async def files_refused(self, turn: Turn, refused: Sequence[tuple[FileRef, str]]) -> None:
        message = blocks.error_message(files_refused_text(refused))
        await self._say(turn, message, marker=f"{turn.id}:files-refused")

    async def gave_up(self, turn: Turn, attempt: str, tries: int) -> None:
        message = blocks.error_message(GAVE_UP.format(n=tries))
        try:
            working = await self._find_working(turn, attempt)
            if working is not None:
                await self._poster.update(turn.channel, working.ts, text=message.text, blocks=message.blocks)
            else:
                await self._say(turn, message, marker=f"{turn.id}:{attempt}:gave-up")
            await self._poster.react(turn.channel, turn.ts, "eyes", remove=True)
        except PostError as exc:
            log.warning("could not tell the thread that turn %s failed: %s", turn.id, exc.error)

    async def _say(self, turn: Turn, message: blocks.Message, *, marker: str) -> None:
        await self._poster.post(
            turn.channel, text=message.text, blocks=message.blocks, thread_ts=turn.thread_ts, marker=marker
        )

    async def _end_stream(self, turn: Turn, ts: str) -> None:
        """A stream is stopped (and marked as the working message) before anything edits it; the stop
        carries what its progress had not sent yet."""
        marker, tail = self._live.pop(ts, None), self._tails.pop(ts, ())
        if marker is not None:
            await self._streams.stop(turn.channel, ts, marker, tail)

    async def _find_working(self, turn: Turn, attempt: str) -> Posted | None:
        """The dead attempt's working message: posted or a finished stream (by its marker), else a stream it
        left open (recorded, or found in the thread), which is stopped so the answer can replace it."""
        marker = working_marker(turn.id, attempt)
        found = await self._poster.find(turn.channel, turn.thread_ts, marker)
        if found is not None:
            return found
        ts = await self._streams.recorded(marker) or await self._streams.orphan(turn)
        if ts is None:
            return None
        await self._streams.stop(turn.channel, ts, marker)
        return Posted(turn.channel, ts)
