"""The bot as a Slack AI app (SPEC §7 "Asking"): Bolt's `AsyncAssistant` middleware for assistant threads.

A new thread gets suggested prompts built from what this person may use (flows.assistant_prompts), or the
Connect prompt when their account is not linked. Messages in the thread are DMs in a thread, so the ingress
middleware (which runs first) admits them as turns like any DM; the turn's Slack output
(`AssistantStatus`) shows the status line while it works and titles the thread from the first question.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_bolt.middleware.assistant.async_assistant import AsyncAssistant

from approvals.assistant_threads import AssistantThreads
from bot import blocks
from bot.poster import Poster, PostError
from bot.slack_text import untrusted
from flows.assistant_prompts import AssistantPrompts, Prompt, Unlinked

__all__ = ["WORKING_STATUS", "AssistantStatus", "build_assistant", "prompt_args", "thread_title"]

log = logging.getLogger(__name__)

WORKING_STATUS = "is looking into it…"
TITLE_CHARS = 60  # Slack cuts longer titles in the history list anyway
PROMPT_TITLE_CHARS = 75
PROMPTS_HEADING = "Here's what I can look into for you:"
CONNECT_REASON = "I can suggest what to ask once I know which systems you may use."


def prompt_args(prompt: Prompt) -> dict[str, str]:
    """A suggested prompt: a short label, and the question it sends when clicked (plain text, not mrkdwn)."""
    label = " ".join(prompt.title.split())[:PROMPT_TITLE_CHARS] or prompt.name
    if prompt.kind == "workflow":
        return {
            "title": f"Run {prompt.name}"[:PROMPT_TITLE_CHARS],
            "message": f"Run the {prompt.name} workflow.",
        }
    return {
        "title": f"Ask {label}",
        "message": f"What's the current state of {prompt.name}? Anything unusual?",
    }


def thread_title(question: str) -> str:
    """The thread's title from its first question: secrets redacted, escaped, one line, trimmed."""
    line = " ".join(str(untrusted(question, markdown=False)).split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def build_assistant(prompts: AssistantPrompts, threads: AssistantThreads, poster: Poster) -> AsyncAssistant:
    assistant = AsyncAssistant(logger=log)

    async def ack(ack: AsyncAck) -> None:
        await ack()

    async def offer(payload: dict[str, Any], context: Any) -> None:
        thread = payload.get("assistant_thread") or {}
        channel, thread_ts, user = thread.get("channel_id"), thread.get("thread_ts"), thread.get("user_id")
        if not (channel and thread_ts and user):
            return
        await threads.started(channel, thread_ts)
        found = await prompts.for_person(str(context.get("team_id") or ""), user, channel)
        try:
            if isinstance(found, Unlinked):
                card = blocks.connect_prompt(found.connect_url, reason=CONNECT_REASON)
                await poster.ephemeral(channel, user, text=card.text, blocks=card.blocks, thread_ts=thread_ts)
            elif found:
                await poster.call(
                    "assistant.threads.setSuggestedPrompts",
                    channel_id=channel,
                    thread_ts=thread_ts,
                    title=PROMPTS_HEADING,
                    prompts=[prompt_args(p) for p in found],
                )
        except PostError as exc:
            log.warning("could not offer prompts in an assistant thread: %s", exc)

    async def context_changed(ack: AsyncAck) -> None:
        await ack()  # the thread's channel context is not used: permissions come from the person, not it

    assistant.thread_started(lazy=[offer])(ack)  # type: ignore[list-item]  # Bolt types lazy as sync
    assistant.thread_context_changed(context_changed)
    return assistant


class AssistantStatus:
    """The status line and title of an assistant thread while a turn runs in it (no-ops elsewhere)."""

    def __init__(self, poster: Poster, threads: AssistantThreads) -> None:
        self._poster = poster
        self._threads = threads

    async def working(self, channel: str, thread_ts: str, question: str) -> None:
        if not await self._threads.is_assistant(channel, thread_ts):
            return
        await self._status(channel, thread_ts, WORKING_STATUS)
        if await self._threads.take_title(channel, thread_ts):
            try:
                await self._poster.call(
                    "assistant.threads.setTitle",
                    channel_id=channel,
                    thread_ts=thread_ts,
                    title=thread_title(question),
                )
            except PostError as exc:
                log.warning("could not title an assistant thread: %s", exc)

    async def done(self, channel: str, thread_ts: str) -> None:
        if await self._threads.is_assistant(channel, thread_ts):
            await self._status(channel, thread_ts, "")

    async def _status(self, channel: str, thread_ts: str, status: str) -> None:
        try:
            await self._poster.call(
                "assistant.threads.setStatus", channel_id=channel, thread_ts=thread_ts, status=status
            )
        except PostError as exc:  # a status line is a courtesy: the turn goes on without it
            log.warning("could not set an assistant thread's status: %s", exc)
