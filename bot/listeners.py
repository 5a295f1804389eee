"""Bolt listeners for everything that is not an event turn: approval buttons and modals
(bot.approval_listeners), /oncall (bot.oncall_listeners), App Home (bot.home_listeners), feedback. Every
listener acknowledges first; the work runs as a Bolt lazy listener after the response has gone, so no click
waits on Redis, the identity provider or Slack (SPEC §10: acked within 3 seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

from slack_bolt.async_app import AsyncAck, AsyncApp

from approvals.audit import Audit
from approvals.feedback import Feedback
from approvals.questions import QuestionStore
from approvals.turns import TurnStore
from bot.approval_clicks import ApprovalClicks
from bot.approval_listeners import register_approvals
from bot.feedback_listeners import register_feedback
from bot.home import Home
from bot.home_listeners import Accounts, register_home
from bot.identity import BotIdentity
from bot.oncall_listeners import register_oncall
from bot.poster import Poster
from bot.question_listeners import register_questions
from bot.stop_listeners import register_stop
from flows.linking import Linking
from flows.stop_rights import StopRights
from flows.workflow_requests import WorkflowRequests
from mcp_clients.tokens import TokenBroker

__all__ = ["Listeners", "register"]


@dataclass(frozen=True)
class Listeners:
    """What the listeners act through, built once by the web app's wiring (bot.wiring)."""

    bot: BotIdentity
    poster: Poster
    clicks: ApprovalClicks
    home: Home
    accounts: Accounts
    workflows: WorkflowRequests
    broker: TokenBroker
    linking: Linking
    audit: Audit
    feedback: Feedback
    questions: QuestionStore
    stops: StopRights  # Stop clicks on running turns (bot.stop_listeners)
    turns: TurnStore


def register(app: AsyncApp, parts: Listeners) -> None:
    clicks, bot = parts.clicks, parts.bot
    # First: its Home-only Approve/Reject listeners must match before the cards' (Bolt runs the first match).
    register_home(app, parts.home, parts.accounts, clicks, bot)
    register_approvals(app, clicks, parts.poster)
    register_oncall(app, parts.workflows, parts.broker, parts.linking, bot)
    register_questions(app, parts.questions, parts.poster)
    register_stop(app, parts.stops, parts.turns, parts.poster, parts.linking)

    @app.action("connect_account")
    @app.action("reconnect_account")
    async def connect_clicked(ack: AsyncAck) -> None:
        await ack()  # a URL button: the browser does the work, Slack only needs the ack

    register_feedback(app, parts.feedback)

    @app.event("message")
    async def other_messages() -> None:
        return None  # messages the ingress middleware let through are not requests
