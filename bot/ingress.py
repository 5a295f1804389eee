"""Slack events in: parse, deduplicate, store, enqueue, acknowledge. Nothing slow, nothing that can wait.

Runs as a Bolt middleware after Bolt has verified the request signature, so it can answer the HTTP request
itself: 200 once the turn is durably queued (or was already), 503 when Redis cannot take it, so that Slack
retries later instead of the request being lost (ACCEPTANCE 6). Every other request (buttons, commands,
views, other events) continues to the listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from approvals.turns import TurnStore
from bot.events import Ignored, Incoming, parse_event
from bot.identity import BotIdentity
from bot.metrics import Metrics
from bot.queues import Queues

__all__ = ["Ingress"]

log = logging.getLogger(__name__)


class Ingress:
    def __init__(
        self, store: TurnStore, queues: Queues, bot: BotIdentity, metrics: Metrics | None = None
    ) -> None:
        self._store = store
        self._queues = queues
        self._bot = bot
        self._metrics = metrics

    async def middleware(
        self, req: AsyncBoltRequest, body: dict[str, Any], next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        event = body.get("event") if body.get("type") == "event_callback" else None
        if not isinstance(event, dict) or event.get("type") not in ("app_mention", "message"):
            return await next()
        retrying = bool(req.headers.get("x-slack-retry-num"))
        try:
            outcome = await self.admit(body, retrying=retrying)
        except RedisError as exc:
            log.warning("ingress could not record an event (%s); asking Slack to retry", type(exc).__name__)
            if self._metrics is not None:
                self._metrics.inc("chatops_ingress_events_total", {"outcome": "unavailable"})
            return BoltResponse(status=503, body="")
        if self._metrics is not None:
            kind = outcome.partition(":")[0]
            self._metrics.inc("chatops_ingress_events_total", {"outcome": kind})
            if kind == "duplicate":
                self._metrics.inc("chatops_dedupe_hits_total", {"stage": "ingress"})
        log.debug("event %s: %s", body.get("event_id"), outcome)
        return BoltResponse(status=200, body="")

    async def admit(self, body: dict[str, Any], *, retrying: bool = False) -> str:
        parsed = parse_event(body, bot_user=self._bot.user_id, bot_id=self._bot.bot_id)
        if isinstance(parsed, Ignored):
            return f"ignored: {parsed.reason}"
        if not await self._is_request(parsed):
            return "ignored: not addressed to the bot"
        source = "dm" if parsed.is_dm else "mention" if parsed.mentioned else "thread"
        turn, new = await self._store.admit(
            team=parsed.team or self._bot.team,
            channel=parsed.channel,
            channel_type=parsed.channel_type,
            user=parsed.user,
            text=parsed.text,
            ts=parsed.ts,
            thread_ts=parsed.thread_ts,
            source=source,
            event_id=parsed.event_id,
            files=parsed.files,
            job=self._queues.turn_job,
        )
        if not new:
            # A retry of a delivery whose enqueue never happened (the web process died in between) must
            # still be answered; the job's claim makes a second enqueue harmless.
            queues = self._queues
            if retrying and not queues.turn_job_exists(turn.id) and not await self._store.status(turn.id):
                self._queues.enqueue_turn(turn.id)
                return "re-enqueued"
            return "duplicate"
        return "queued"

    async def _is_request(self, incoming: Incoming) -> bool:
        if incoming.mentioned or incoming.is_dm:
            return True
        if not incoming.in_thread:
            return False
        return await self._store.is_bot_thread(
            incoming.team or self._bot.team, incoming.channel, incoming.thread_ts
        )
