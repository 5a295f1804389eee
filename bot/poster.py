"""Everything the bot writes to Slack goes through here, so retries never turn into duplicate posts.

- slack_sdk's own connection-error retry is switched off (`retry_handlers=[]`): it re-sends a
  `chat.postMessage` whose response was lost, and the thread shows the answer twice.
- Each post carries message `metadata` naming what it is (turn and part). When a post's outcome is unknown
  (connection dropped after the request was sent), we look for that marker in the thread before posting
  again, so exactly one copy appears (ACCEPTANCE 8).
- A 429 blocks that method for that workspace until Retry-After has passed, for every process (a key in
  Redis), and the call is retried after it; other methods are unaffected (ACCEPTANCE 7).
- 5xx and connection failures are retried a bounded number of times with backoff.
- Text goes out as `Mrkdwn` only (bot.slack_text): a plain `str` is escaped as untrusted, every payload's
  text passes `defuse`, and file content `file_text`, so no path can post a ping or a disguised link.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_text import Mrkdwn, defuse, file_text, untrusted
from mcp_clients.connection import shared_ssl_context

__all__ = ["PostError", "Poster", "make_slack_client", "slack_session"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
MAX_RETRY_AFTER_SECONDS = 60.0
METADATA_EVENT = "chatops_message"
_FORM_METHODS = frozenset(
    {"conversations.replies", "conversations.history", "chat.getPermalink", "users.info"}
)
# Methods whose arguments people read: their text is guarded whoever built it (bot.slack_text.defuse).
_SHOWN_METHODS = frozenset(
    {
        "chat.postMessage",
        "chat.update",
        "chat.postEphemeral",
        "views.publish",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    }
)


class PostError(Exception):
    """Slack refused or kept failing; `error` is Slack's error code (or 'unreachable')."""

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"Slack {method} failed: {error}")
        self.method = method
        self.error = error


class _Uncertain(Exception):
    """The request may have been processed: the connection failed after it was sent."""


def make_slack_client(
    token: str, base_url: str, *, timeout: int = 15, session: aiohttp.ClientSession | None = None
) -> AsyncWebClient:
    """No retry handlers: this module decides what is safe to retry (see the module docstring). Pass a
    `session` to keep connections to Slack open across calls: without one, slack_sdk opens a new session,
    so a new TCP and TLS connection, for every call (five per answered question)."""
    return AsyncWebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=[], session=session)


def slack_session(*, timeout: int = 15) -> aiohttp.ClientSession:
    """A keep-alive session for `make_slack_client`, using the process's one TLS context; close it."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=shared_ssl_context()),
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


@dataclass(frozen=True)
class Posted:
    channel: str
    ts: str


class Poster:
    def __init__(
        self,
        client: AsyncWebClient,
        redis: aioredis.Redis,
        team: str,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.client = client
        self._redis = redis
        self._team = team
        self._clock = clock
        self._sleep = sleep

    def _gate_key(self, method: str) -> str:
        return f"chatops:slack-rl:{self._team}:{method}"

    async def _wait_gate(self, method: str) -> None:
        try:
            raw = await self._redis.get(self._gate_key(method))
        except RedisError:
            return  # without Redis there is no shared gate; Slack's own 429 still stops us
        if raw is not None:
            wait = min(MAX_RETRY_AFTER_SECONDS, float(raw) - self._clock())
            if wait > 0:
                await self._sleep(wait)

    async def _close_gate(self, method: str, retry_after: float) -> None:
        until = self._clock() + retry_after
        try:
            await self._redis.set(
                self._gate_key(method), repr(until), px=max(1, int(retry_after * 1000) + 100)
            )
        except RedisError:
            await self._sleep(retry_after)  # keep the promise locally at least

    async def call(self, method: str, *, idempotent: bool = True, **kwargs: Any) -> dict[str, Any]:
        """Call a Web API method with the rate-limit gate and bounded retries.

        Non-idempotent calls (posts) raise `_Uncertain` instead of retrying a request that may have landed.
        """
        backoff = 0.5
        if method in _SHOWN_METHODS:
            kwargs = defuse(kwargs)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            await self._wait_gate(method)
            try:
                if method in _FORM_METHODS:  # read methods take form arguments, not JSON bodies
                    form = {k: str(v).lower() if isinstance(v, bool) else v for k, v in kwargs.items()}
                    response = await self.client.api_call(method, data=form)
                else:
                    response = await self.client.api_call(method, json=kwargs)
                return dict(response.data) if isinstance(response.data, dict) else {}
            except SlackApiError as exc:
                status = exc.response.status_code
                if status == 429:
                    retry_after = float(
                        exc.response.headers.get("Retry-After", exc.response.headers.get("retry-after", 1))
                    )
                    await self._close_gate(method, min(retry_after, MAX_RETRY_AFTER_SECONDS))
                    continue
                if status >= 500 and attempt < MAX_ATTEMPTS:
                    if not idempotent:
                        raise _Uncertain(method) from None
                    await self._sleep(backoff)
                    backoff *= 2
                    continue
                error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
                raise PostError(method, str(error or f"HTTP {status}")) from None
            except (OSError, TimeoutError) as exc:
                if not idempotent:
                    raise _Uncertain(method) from exc
                if attempt == MAX_ATTEMPTS:
                    raise PostError(method, "unreachable") from None
                await self._sleep(backoff)
                backoff *= 2
            except Exception as exc:  # aiohttp's client errors are not OSErrors
                if type(exc).__module__.startswith("aiohttp"):
                    if not idempotent:
                        raise _Uncertain(method) from exc
                    if attempt == MAX_ATTEMPTS:
                        raise PostError(method, "unreachable") from None
                    await self._sleep(backoff)
                    backoff *= 2
                    continue
                raise
        raise PostError(method, "rate limited too long")

    async def post(
        self,
        channel: str,
        *,
        text: Mrkdwn,
        blocks: Sequence[Mapping[str, Any]] | None = None,
        thread_ts: str | None = None,
        marker: str,
    ) -> Posted:
        """Post one message exactly once. `marker` names it uniquely (e.g. "<turn id>:answer:2")."""
        args: dict[str, Any] = {
            "channel": channel,
            "text": untrusted(text),
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if blocks is not None:
            args["blocks"] = list(blocks)
        if thread_ts:
            args["thread_ts"] = thread_ts
        args["metadata"] = {"event_type": METADATA_EVENT, "event_payload": {"marker": marker}}
        for _ in range(MAX_ATTEMPTS):
            try:
                data = await self.call("chat.postMessage", idempotent=False, **args)
                return Posted(str(data.get("channel", channel)), str(data["ts"]))
            except _Uncertain:
                found = await self.find(channel, thread_ts, marker)
                if found is not None:
                    return found
        raise PostError("chat.postMessage", "unreachable")

    async def call_once(self, method: str, **kwargs: Any) -> dict[str, Any] | None:
        """A call that must not be repeated blindly (it adds something): None when its outcome is unknown
        (the connection failed after the request was sent); the caller decides how to find out."""
        try:
            return await self.call(method, idempotent=False, **kwargs)
        except _Uncertain:
            return None

    async def find(self, channel: str, thread_ts: str | None, marker: str) -> Posted | None:
        """The bot's message carrying `marker` in this thread (or channel), if it exists."""
        try:
            if thread_ts:
                data = await self.call(
                    "conversations.replies",
                    channel=channel,
                    ts=thread_ts,
                    include_all_metadata=True,
                    limit=200,
                )
            else:
                data = await self.call(
                    "conversations.history", channel=channel, include_all_metadata=True, limit=50
                )
        except PostError:
            return None
        for message in data.get("messages") or []:
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("marker") == marker:
                return Posted(channel, str(message["ts"]))
        return None

    async def update(
        self, channel: str, ts: str, *, text: Mrkdwn, blocks: Sequence[Mapping[str, Any]] | None = None
    ) -> None:
        args: dict[str, Any] = {"channel": channel, "ts": ts, "text": untrusted(text)}
        if blocks is not None:
            args["blocks"] = list(blocks)
        await self.call("chat.update", **args)  # an update is idempotent: retrying it is safe

    async def ephemeral(
        self,
        channel: str,
        user: str,
        *,
        text: Mrkdwn,
        blocks: Sequence[Mapping[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> None:
        args: dict[str, Any] = {"channel": channel, "user": user, "text": untrusted(text)}
        if blocks is not None:
            args["blocks"] = list(blocks)
        if thread_ts:
            args["thread_ts"] = thread_ts
        await self.call("chat.postEphemeral", idempotent=False, **args)

    async def react(self, channel: str, ts: str, name: str, *, remove: bool = False) -> None:
        try:
            await self.call(
                "reactions.remove" if remove else "reactions.add", channel=channel, timestamp=ts, name=name
            )
        except PostError as exc:
            if exc.error not in ("already_reacted", "no_reaction", "message_not_found"):
                log.info("reaction %s failed: %s", name, exc.error)

    async def permalink(self, channel: str, ts: str) -> str | None:
        try:
            data = await self.call("chat.getPermalink", channel=channel, message_ts=ts)
        except PostError:
            return None
        link = data.get("permalink")
        return str(link) if link else None

    async def upload_text(
        self,
        channel: str,
        thread_ts: str | None,
        *,
        filename: str,
        title: str,
        content: str,
        exact: bool = False,
    ) -> None:
        """Upload long content as a file in the thread (for answers and arguments too long for messages).

        Secrets are redacted unless `exact` (an approval's arguments: approvers see exactly what would run,
        and arguments shaped like a credential never get as far as a card)."""
        kwargs: dict[str, Any] = {
            "channel": channel,
            "filename": file_text(filename),
            "title": file_text(title),
            "content": file_text(content, redact=not exact),
        }
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        try:
            await self.client.files_upload_v2(**kwargs)
        except SlackApiError as exc:
            raise PostError(
                "files.upload", str(exc.response.get("error") or exc.response.status_code)
            ) from None
