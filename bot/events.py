"""Parse Slack event payloads into frozen values, or say why an event is not a request (pure, no I/O).

What counts as a request (SPEC §7 "Asking"): an `app_mention`; any message in a DM with the bot; a message in
a thread the bot is part of. What never does: the bot's own messages, other bots, edits and deletions
(any `subtype` other than plain messages and file shares), and empty text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.attachments import dump_refs, refs_from_event

__all__ = ["Ignored", "Incoming", "parse_event", "strip_mention"]

_ALLOWED_SUBTYPES = {None, "file_share", "thread_broadcast"}
MAX_INPUT_CHARS = 20_000


@dataclass(frozen=True)
class Incoming:
    team: str
    channel: str
    channel_type: str  # channel | group | im | mpim
    user: str
    text: str
    ts: str
    thread_ts: str  # the conversation's root: the message's own ts when it starts one
    event_id: str
    mentioned: bool
    in_thread: bool  # the message was posted inside an existing thread
    files: str = ""  # attached files' refs as JSON (agent.attachments.dump_refs); "" for none

    @property
    def is_dm(self) -> bool:
        return self.channel_type == "im"


@dataclass(frozen=True)
class Ignored:
    reason: str


def strip_mention(text: str, bot_user: str | None) -> str:
    """Remove the leading mention of the bot so the model sees the question, not the ping."""
    if bot_user:
        text = re.sub(rf"^\s*<@{re.escape(bot_user)}(\|[^>]*)?>[\s:,]*", "", text)
    return text.strip()


def parse_event(body: Mapping[str, Any], *, bot_user: str | None, bot_id: str | None) -> Incoming | Ignored:
    event = body.get("event")
    if not isinstance(event, Mapping):
        return Ignored("no event")
    kind = event.get("type")
    if kind not in ("app_mention", "message"):
        return Ignored(f"event type {kind}")
    subtype = event.get("subtype")
    if subtype not in _ALLOWED_SUBTYPES:
        return Ignored(f"message subtype {subtype}")
    if event.get("bot_id") or event.get("bot_profile"):
        return Ignored("from a bot" if event.get("bot_id") != bot_id else "the bot's own message")
    user = event.get("user")
    if not isinstance(user, str) or not user or user == bot_user:
        return Ignored("no human author")
    channel = event.get("channel")
    ts = event.get("ts")
    if not isinstance(channel, str) or not isinstance(ts, str):
        return Ignored("no channel or ts")
    team = body.get("team_id") or event.get("team") or ""
    raw_text = event.get("text") if isinstance(event.get("text"), str) else ""
    mentioned = kind == "app_mention" or bool(bot_user and f"<@{bot_user}" in str(raw_text))
    channel_type = str(event.get("channel_type") or ("im" if channel.startswith("D") else "channel"))
    thread_ts = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else None
    return Incoming(
        team=str(team),
        channel=channel,
        channel_type=channel_type,
        user=user,
        text=strip_mention(str(raw_text), bot_user),
        ts=ts,
        thread_ts=thread_ts or ts,
        event_id=str(body.get("event_id") or ""),
        mentioned=mentioned,
        in_thread=thread_ts is not None and thread_ts != ts,
        files=dump_refs(refs_from_event(event.get("files"))),
    )
