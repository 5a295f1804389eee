"""Bolt listeners for everything that is not an event turn: approval buttons and modals, feedback,
App Home. Every listener acknowledges first; the work runs as a Bolt lazy listener after the response has
gone, so no click waits on Redis, the identity provider or Slack (SPEC §10: acked within 3 seconds).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import cards
from bot.approval_flow import approval_flow
from bot.blocks import FEEDBACK_ACTION_ID, parse_feedback_value
from bot.home_listeners import register_home
from bot.oncall_listeners import register_oncall
from bot.poster import PostError
from bot.queues import Queues
from bot.services import BotIdentity, Services
from bot.slack_text import trusted
from bot.workflow_flow import WorkflowCatalog, WorkflowFlow

__all__ = ["register"]

log = logging.getLogger(__name__)

COULD_NOT_RECORD = (
    "I couldn't record your decision just now (my storage is unavailable). Nothing changed; try again."
)


async def _ack(ack: AsyncAck) -> None:
    await ack()


def register(app: AsyncApp, services: Services, queues: Queues, bot: BotIdentity) -> None:
    # First: its Home-only Approve/Reject listeners must match before the cards' (Bolt runs the first match).
    register_home(app, services, queues, bot)
    flow = approval_flow(services, queues, bot)
    catalog = WorkflowCatalog(services.settings.workflows_dir)
    register_oncall(app, WorkflowFlow(services, queues, bot, catalog))

    async def tell(channel: str | None, user: str, text: str, thread_ts: str | None = None) -> None:
        if not channel or not text:
            return
        try:
            # The approval flow's replies are ours, built on approvals.policy, which escapes what is not.
            await services.poster.ephemeral(channel, user, text=trusted(text), thread_ts=thread_ts)
        except PostError as exc:
            log.warning("could not tell %s: %s", user, exc.error)

    async def approve(body: dict[str, Any]) -> None:
        user = str(body["user"]["id"])
        container = body.get("container") or {}
        channel, ts = container.get("channel_id"), container.get("message_ts")
        approval_id = str((body.get("actions") or [{}])[0].get("value") or "")
        try:
            text = await flow.vote(approval_id, user=user, channel=str(channel), message_ts=str(ts))
        except RedisError:
            text = COULD_NOT_RECORD
        await tell(channel, user, text, container.get("thread_ts"))

    async def open_reject(body: dict[str, Any], client: AsyncWebClient) -> None:
        user = str(body["user"]["id"])
        container = body.get("container") or {}
        approval_id = str((body.get("actions") or [{}])[0].get("value") or "")
        try:
            refusal = await flow.may_reject(approval_id, user=user)
        except RedisError:
            refusal = COULD_NOT_RECORD
        if refusal:
            await tell(container.get("channel_id"), user, refusal, container.get("thread_ts"))
            return
        await client.views_open(trigger_id=body["trigger_id"], view=cards.reject_modal(approval_id))

    async def check_reason(ack: AsyncAck, view: dict[str, Any]) -> None:
        reason = _reason(view)
        if not reason.strip():
            await ack(response_action="errors", errors={"reason": "Please say why, so the requester knows."})
            return
        await ack()

    async def submit_reject(body: dict[str, Any], view: dict[str, Any]) -> None:
        user = str(body["user"]["id"])
        approval_id = str(view.get("private_metadata") or "")
        reason = _reason(view).strip()
        if not reason:
            return
        try:
            text = await flow.reject(approval_id, user=user, reason=reason)
            approval = await flow.store.get(approval_id)
        except RedisError:
            text, approval = COULD_NOT_RECORD, None
        if approval is not None:
            await tell(approval.channel, user, text, approval.thread_ts)

    app.action(cards.APPROVE_ACTION_ID)(ack=_ack, lazy=[approve])
    app.action(cards.REJECT_ACTION_ID)(ack=_ack, lazy=[open_reject])
    app.view(cards.REJECT_CALLBACK_ID)(ack=check_reason, lazy=[submit_reject])

    @app.action("connect_account")
    @app.action("reconnect_account")
    async def connect_clicked(ack: AsyncAck) -> None:
        await ack()  # a URL button: the browser does the work, Slack only needs the ack

    async def feedback(body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        parsed = parse_feedback_value(str(action.get("value") or ""))
        if parsed is not None:
            vote, turn_id = parsed
            await services.redis.hset(f"chatops:feedback:{turn_id}", str(body["user"]["id"]), vote)

    app.action(FEEDBACK_ACTION_ID)(ack=_ack, lazy=[feedback])

    @app.event("message")
    async def other_messages() -> None:
        return None  # messages the ingress middleware let through are not requests


def _reason(view: dict[str, Any]) -> str:
    values = (view.get("state") or {}).get("values") or {}
    return str(((values.get("reason") or {}).get("reason_input") or {}).get("value") or "")
