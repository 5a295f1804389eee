"""A turn in Slack (flows.ports.TurnOutput, RecoveryOutput): the eyes, the working message, progress, the
answer, the Connect prompt, and what a refused or lost request is told, in Slack's words.

The working message carries a marker derived from the turn and its first attempt, so a recovery (its
worker died) finds the dead attempt's message and continues in it: one answer in the thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from agent.loop import Result
from approvals.home_records import HomeRecords
from approvals.turns import Turn, base_attempt
from bot import blocks
from bot.delivery import Delivery
from bot.poster import Posted, Poster, PostError
from bot.progress import SlackProgress
from bot.slack_text import untrusted
from flows.ports import Refusal

__all__ = ["GAVE_UP", "SlackTurnOutput", "refusal_text", "working_marker"]

log = logging.getLogger(__name__)

GAVE_UP = "I couldn't finish this request: I tried {n} times and each try was cut short. Please ask me again."
CONNECT_REASON = "Your question needs the tools your account gives you access to."


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


class SlackTurnOutput:
    def __init__(self, poster: Poster, records: HomeRecords) -> None:
        self._poster = poster
        self._records = records  # App Home's list of recent requests

    async def remember(self, turn: Turn) -> None:
        await self._records.remember(turn.team, turn.user, turn.id, turn.channel, turn.thread_ts, turn.text)

    async def eyes(self, turn: Turn, *, on: bool) -> None:
        await self._poster.react(turn.channel, turn.ts, "eyes", remove=not on)

    async def working(self, turn: Turn, attempt: str) -> str:
        if attempt != base_attempt(attempt):
            found = await self._find_working(turn, attempt)
            if found is not None:
                return found.ts
        working = blocks.working_message()
        posted = await self._poster.post(
            turn.channel,
            text=working.text,
            blocks=working.blocks,
            thread_ts=turn.thread_ts,
            marker=working_marker(turn.id, attempt),
        )
        return posted.ts

    def progress(self, turn: Turn, working: Awaitable[str]) -> SlackProgress:
        return SlackProgress(self._poster, turn.channel, working)

    async def unavailable(self, turn: Turn, working: str, reason: str) -> None:
        await self._poster.update(turn.channel, working, text=untrusted(reason))

    async def deliver(
        self, turn: Turn, working: str, result: Result, seconds: float, attempt: str, *, private: bool
    ) -> None:
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

    async def _find_working(self, turn: Turn, attempt: str) -> Posted | None:
        return await self._poster.find(turn.channel, turn.thread_ts, working_marker(turn.id, attempt))
