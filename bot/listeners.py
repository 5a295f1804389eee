"""Bolt listeners for everything that is not an event turn: buttons, (later) commands, views, App Home.

Listeners ack first and keep the rest short; anything slow is enqueued.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.blocks import FEEDBACK_ACTION_ID, parse_feedback_value
from bot.queues import Queues
from bot.services import BotIdentity, Services

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(app: AsyncApp, services: Services, queues: Queues, bot: BotIdentity) -> None:
    del queues, bot  # used by the approval and workflow listeners

    @app.action("connect_account")
    async def connect_clicked(ack: AsyncAck) -> None:
        await ack()  # a URL button: the browser does the work, Slack only needs the ack

    @app.action(FEEDBACK_ACTION_ID)
    async def feedback(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        parsed = parse_feedback_value(str(action.get("value") or ""))
        if parsed is not None:
            vote, turn_id = parsed
            await record_feedback(services, turn_id, str(body["user"]["id"]), vote)

    @app.event("app_home_opened")
    async def home_opened() -> None:
        return None  # App Home arrives with the operating issue; ack so Slack does not retry

    @app.event("message")
    async def other_messages() -> None:
        return None  # messages the ingress middleware let through are not requests


async def record_feedback(services: Services, turn_id: str, user: str, vote: str) -> None:
    if not turn_id:
        return
    await services.redis.hset(f"chatops:feedback:{turn_id}", user, vote)
