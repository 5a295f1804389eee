"""Bolt listeners for the approval card's buttons (Approve, Reject, Withdraw) and the reject modal (SPEC §7).
Each acknowledges first and works in a Bolt lazy listener, so no click waits on Redis, the identity
provider or Slack (SPEC §10).

The approval service decides; bot.approval_clicks words it; the reply goes to the clicker alone.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import cards
from bot.approval_clicks import ApprovalClicks
from bot.poster import Poster, PostError
from bot.slack_text import trusted

__all__ = ["COULD_NOT_RECORD", "register_approvals"]

log = logging.getLogger(__name__)

COULD_NOT_RECORD = (
    "I couldn't record your decision just now (my storage is unavailable). Nothing changed; try again."
)


async def _ack(ack: AsyncAck) -> None:
    await ack()


def register_approvals(app: AsyncApp, clicks: ApprovalClicks, poster: Poster) -> None:
    # Over 60 lines on purpose: the handlers of one card (approve, reject, its reason form, withdraw) are
    # Bolt closures sharing `tell`, and read best side by side.
    async def tell(channel: str | None, user: str, text: str, thread_ts: str | None = None) -> None:
        if not channel or not text:
            return
        try:
            # The click replies are ours, built by bot.approval_text, which escapes what is not.
            await poster.ephemeral(channel, user, text=trusted(text), thread_ts=thread_ts)
        except PostError as exc:
            log.warning("could not tell %s: %s", user, exc.error)

    async def approve(body: dict[str, Any]) -> None:
        user = str(body["user"]["id"])
        container = body.get("container") or {}
        channel, ts = container.get("channel_id"), container.get("message_ts")
        approval_id = str((body.get("actions") or [{}])[0].get("value") or "")
        try:
            text = await clicks.vote(approval_id, user=user, channel=str(channel), message_ts=str(ts))
        except RedisError:
            text = COULD_NOT_RECORD
        await tell(channel, user, text, container.get("thread_ts"))

    async def withdraw(body: dict[str, Any]) -> None:
        user, container = str(body["user"]["id"]), body.get("container") or {}
        try:
            text = await clicks.withdraw(_clicked(body), user=user)
        except RedisError:
            text = COULD_NOT_RECORD
        await tell(container.get("channel_id"), user, text, container.get("thread_ts"))

    async def open_reject(body: dict[str, Any], client: AsyncWebClient) -> None:
        user = str(body["user"]["id"])
        container = body.get("container") or {}
        approval_id = str((body.get("actions") or [{}])[0].get("value") or "")
        try:
            refusal = await clicks.may_reject(approval_id, user=user)
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
            text = await clicks.reject(approval_id, user=user, reason=reason)
            approval = await clicks.service.get(approval_id)
        except RedisError:
            text, approval = COULD_NOT_RECORD, None
        if approval is not None:
            await tell(approval.channel, user, text, approval.thread_ts)

    app.action(cards.APPROVE_ACTION_ID)(ack=_ack, lazy=[approve])
    app.action(cards.REJECT_ACTION_ID)(ack=_ack, lazy=[open_reject])
    app.action(cards.WITHDRAW_ACTION_ID)(ack=_ack, lazy=[withdraw])
    app.view(cards.REJECT_CALLBACK_ID)(ack=check_reason, lazy=[submit_reject])


def _clicked(body: dict[str, Any]) -> str:
    """The approval id a button carries (its value)."""
    return str((body.get("actions") or [{}])[0].get("value") or "")


def _reason(view: dict[str, Any]) -> str:
    values = (view.get("state") or {}).get("values") or {}
    return str(((values.get("reason") or {}).get("reason_input") or {}).get("value") or "")
