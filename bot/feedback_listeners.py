"""Feedback buttons on answers and workflow results: a vote is stored; a 👎 also opens a small modal asking,
optionally, what was wrong (stored with the feedback, approvals.feedback). Acked first, the work lazy."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.models.blocks import InputBlock, PlainTextInputElement
from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient

from approvals.feedback import REASON_MAX_CHARS, Feedback
from bot.blocks import FEEDBACK_ACTION_ID, parse_feedback_value

__all__ = ["REASON_CALLBACK_ID", "reason_modal", "register_feedback"]

REASON_CALLBACK_ID = "feedback_reason"
_BLOCK_ID, _ACTION_ID = "feedback_reason", "reason"


def reason_modal(turn_id: str) -> dict[str, Any]:
    view = View(
        type="modal",
        callback_id=REASON_CALLBACK_ID,
        private_metadata=turn_id,
        title="Not helpful",
        submit="Send",
        close="Skip",
        blocks=[
            InputBlock(
                block_id=_BLOCK_ID,
                label="What was wrong? (optional)",
                hint="It helps the owners correct their tools' estimates.",
                optional=True,
                element=PlainTextInputElement(
                    action_id=_ACTION_ID, multiline=True, max_length=REASON_MAX_CHARS
                ),
            )
        ],
    )
    view.validate_json()
    return view.to_dict()


async def _ack(ack: AsyncAck) -> None:
    await ack()


def register_feedback(app: AsyncApp, feedback: Feedback) -> None:
    async def voted(body: dict[str, Any], client: AsyncWebClient) -> None:
        action = (body.get("actions") or [{}])[0]
        parsed = parse_feedback_value(str(action.get("value") or ""))
        if parsed is None:
            return
        vote, turn_id = parsed
        await feedback.vote(turn_id, str(body["user"]["id"]), vote)
        if vote == "down" and body.get("trigger_id"):
            await client.views_open(trigger_id=body["trigger_id"], view=reason_modal(turn_id))

    async def explained(body: dict[str, Any], view: dict[str, Any]) -> None:
        turn_id = str(view.get("private_metadata") or "")
        state = ((view.get("state") or {}).get("values") or {}).get(_BLOCK_ID) or {}
        reason = str((state.get(_ACTION_ID) or {}).get("value") or "")
        if turn_id and reason.strip():
            await feedback.explain(turn_id, str(body["user"]["id"]), reason)

    app.action(FEEDBACK_ACTION_ID)(ack=_ack, lazy=[voted])
    app.view(REASON_CALLBACK_ID)(ack=_ack, lazy=[explained])
