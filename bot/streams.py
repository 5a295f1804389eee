"""Slack's streaming methods for a turn's working message, with the poster's guarantees kept.

- `chat.startStream` adds a message, so it is sent once (`Poster.call_once`). When its outcome is unknown,
  the thread is read for the stream it may have started (the bot's newest message after the question that
  carries no marker: every other bot message in a thread carries one), so a lost response never leaves a
  second message behind.
- The stream's ts is recorded in Redis under the working message's marker as soon as it is known, so a
  recovery (the worker died mid-stream) finds it, stops it and finishes the answer in it.
- `chat.stopStream` sets the marker as message metadata, so `Poster.find` finds a finished stream like any
  working message; stopping twice is harmless (Slack answers `message_not_in_streaming_state`).
- A workspace that refuses to stream (an old workspace, a missing feature) is remembered for an hour in
  Redis, and every process falls back to message updates without asking again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.utils import str_if_bytes

from approvals.turns import Turn
from bot.blocks import stop_actions
from bot.poster import METADATA_EVENT, Poster, PostError

__all__ = ["SlackStreams"]

log = logging.getLogger(__name__)

STREAM_KEY = "chatops:stream:{marker}"
STREAM_TTL_SECONDS = 86_400
OFF_KEY = "chatops:streaming-off:{team}"
OFF_SECONDS = 3600
# Errors that say this workspace (or app) cannot stream: remembered, so no turn asks again for an hour.
# Anything else (a channel it cannot post in, a transient failure) falls back for this turn only.
_CANNOT_STREAM = frozenset(
    {
        "feature_not_enabled",
        "not_allowed",
        "not_allowed_token_type",
        "missing_scope",
        "unknown_method",
        "method_deprecated",
        "not_authed_for_streaming",
    }
)
EMPTY_STOP = "Working…"  # replaced by the answer a moment later
_STOPPED = frozenset({"message_not_in_streaming_state", "message_not_found"})


class SlackStreams:
    def __init__(self, poster: Poster, redis: aioredis.Redis | None, *, enabled: bool = True) -> None:
        self._poster = poster
        self._redis = redis
        self._enabled = enabled and redis is not None  # without Redis a recovery could not find a stream

    async def start(self, turn: Turn, marker: str) -> str | None:
        """A stream in the turn's thread for its asker, or None (streaming unavailable: fall back)."""
        if not self._enabled or await self._off(turn.team):
            return None
        try:
            data = await self._poster.call_once(
                "chat.startStream",
                channel=turn.channel,
                thread_ts=turn.thread_ts,
                recipient_team_id=turn.team,
                recipient_user_id=turn.user,
                # The plan display renders only in "plan" mode, which is fixed here, before the model has
                # said whether it has a plan; tool tasks then render in the same plan block.
                task_display_mode="plan",
                chunks=[{"type": "blocks", "blocks": [stop_actions(turn.id)]}],
            )
        except PostError as exc:
            log.info("streaming unavailable in %s (%s): message updates instead", turn.team, exc.error)
            if exc.error in _CANNOT_STREAM:
                await self._remember_off(turn.team, exc.error)
            return None
        ts = str(data["ts"]) if data is not None and data.get("ts") else await self.orphan(turn)
        if ts is not None:
            await self._record(marker, ts)
        return ts

    async def recorded(self, marker: str) -> str | None:
        """The stream an earlier attempt of this turn started, if it got as far as recording it."""
        if self._redis is None:
            return None
        try:
            raw = await self._redis.get(STREAM_KEY.format(marker=marker))
        except RedisError:
            return None
        return None if raw is None else str_if_bytes(raw)

    async def orphan(self, turn: Turn) -> str | None:
        """A stream started for this turn whose ts nobody learned: the bot's newest unmarked message in
        the thread after the question."""
        try:
            data = await self._poster.call(
                "conversations.replies", channel=turn.channel, ts=turn.thread_ts, include_all_metadata=True
            )
        except PostError:
            return None
        found = [
            str(m["ts"])
            for m in data.get("messages") or []
            if m.get("bot_id") and not m.get("metadata") and float(m["ts"]) > float(turn.ts)
        ]
        return max(found, key=float) if found else None

    async def append(self, channel: str, ts: str, chunks: Sequence[Mapping[str, Any]]) -> bool:
        """Add to a stream; False when Slack refused (the stream is over for us) or the outcome is unknown
        (not repeated: the answer replaces the message's text at the end anyway)."""
        try:
            return (
                await self._poster.call_once("chat.appendStream", channel=channel, ts=ts, chunks=list(chunks))
                is not None
            )
        except PostError as exc:
            log.info("chat.appendStream refused (%s); the answer will replace the message", exc.error)
            return False

    async def stop(
        self, channel: str, ts: str, marker: str, chunks: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        """End the stream and mark it as the turn's working message (safe to repeat)."""
        args: dict[str, Any] = {
            "channel": channel,
            "ts": ts,
            "metadata": {"event_type": METADATA_EVENT, "event_payload": {"marker": marker}},
        }
        if chunks:
            args["chunks"] = list(chunks)
        try:
            await self._poster.call("chat.stopStream", **args)
        except PostError as exc:
            # Nothing was streamed yet: a message needs some text to end (refused, so nothing was added).
            if exc.error == "no_text" and not any(c.get("type") == "markdown_text" for c in chunks):
                await self.stop(channel, ts, marker, [*chunks, {"type": "markdown_text", "text": EMPTY_STOP}])
            elif exc.error not in _STOPPED:
                log.warning("chat.stopStream failed: %s", exc.error)

    async def _record(self, marker: str, ts: str) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.set(STREAM_KEY.format(marker=marker), ts, ex=STREAM_TTL_SECONDS)
        except RedisError:
            log.warning("could not record stream %s; a recovery will look for it in the thread", ts)

    async def _off(self, team: str) -> bool:
        if self._redis is None:
            return True
        try:
            return bool(await self._redis.exists(OFF_KEY.format(team=team)))
        except RedisError:
            return False

    async def _remember_off(self, team: str, error: str) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.set(OFF_KEY.format(team=team), error, ex=OFF_SECONDS)
        except RedisError:
            return
