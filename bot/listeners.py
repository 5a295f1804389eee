"""Bolt listeners for everything that is not an event turn: approval buttons and modals
(bot.approval_listeners), /oncall (bot.oncall_listeners), App Home (bot.home_listeners), feedback. Every
listener acknowledges first; the work runs as a Bolt lazy listener after the response has gone, so no click
waits on Redis, the identity provider or Slack (SPEC §10: acked within 3 seconds).
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from approvals.questions import QuestionStore
from bot.approval_listeners import register_approvals
from bot.approval_wiring import approval_clicks
from bot.blocks import FEEDBACK_ACTION_ID, parse_feedback_value
from bot.home_listeners import register_home
from bot.oncall_listeners import register_oncall
from bot.question_listeners import register_questions
from bot.queues import Queues
from bot.services import BotIdentity, Services
from bot.workflow_flow import WorkflowCatalog, WorkflowFlow

__all__ = ["register"]


async def _ack(ack: AsyncAck) -> None:
    await ack()


def register(app: AsyncApp, services: Services, queues: Queues, bot: BotIdentity) -> None:
    clicks = approval_clicks(services, queues)
    # First: its Home-only Approve/Reject listeners must match before the cards' (Bolt runs the first match).
    register_home(app, services, clicks, bot)
    register_approvals(app, clicks, services.poster)
    catalog = WorkflowCatalog(services.settings.workflows_dir)
    register_oncall(app, WorkflowFlow(services, queues, bot, catalog))
    register_questions(app, QuestionStore(services.redis), services.poster)

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
