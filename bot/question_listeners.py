"""Bolt listeners for a server's question card and form (SPEC §7 "Server questions"). Each acknowledges
first and works in a lazy listener. Every decision is made from the record in Redis (approvals/questions.py),
never from what the click carries beyond the question id: only the person whose call it is may answer
(anyone else is told so, privately), and a question already decided is told, not answered twice. The
answer goes to the turn waiting on it; that turn closes the card.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from approvals.questions import Action, QuestionStore
from bot.poster import Poster, PostError
from bot.question_card import (
    ANSWER_ACTION,
    CANCEL_ACTION,
    DECLINE_ACTION,
    DONE_ACTION,
    FORM_CALLBACK_ID,
    LINK_ACTION,
    form_view,
    only_asker,
)
from bot.question_form import form_fields, read_answer
from bot.slack_text import Mrkdwn, ours, trusted

__all__ = ["register_questions"]

log = logging.getLogger(__name__)

CLOSED = trusted("This question is already closed.")
UNKNOWN = trusted("I can't find this question any more.")
UNAVAILABLE = trusted("I couldn't record your answer just now (my storage is unavailable). Try again.")
SAID = {"ok": None, "closed": CLOSED, "unknown": UNKNOWN}


async def _ack(ack: AsyncAck) -> None:
    await ack()


def _clicked(body: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    """(user, question id, channel, thread) of a card click."""
    container = body.get("container") or {}
    question_id = str((body.get("actions") or [{}])[0].get("value") or "")
    return str(body["user"]["id"]), question_id, container.get("channel_id"), container.get("thread_ts")


def register_questions(app: AsyncApp, store: QuestionStore, poster: Poster) -> None:
    # Over 60 lines on purpose: Bolt registers closures, and the handlers for one card (answer, submit,
    # decline, cancel, done) read best side by side, sharing `tell` and the store.
    async def tell(channel: str | None, user: str, text: Mrkdwn, thread_ts: str | None) -> None:
        if not channel:
            return
        try:
            await poster.ephemeral(channel, user, text=text, thread_ts=thread_ts)
        except PostError as exc:
            log.warning("could not tell %s about a question: %s", user, exc.error)

    async def settle(body: dict[str, Any], action: Action) -> None:
        user, question_id, channel, thread = _clicked(body)
        try:
            question = await store.get(question_id)
            outcome = await store.answer(question_id, user, action)
        except RedisError:
            await tell(channel, user, UNAVAILABLE, thread)
            return
        if outcome == "not_yours" and question is not None:
            await tell(channel, user, only_asker(question.user), thread)
        elif SAID.get(outcome):
            await tell(channel, user, SAID[outcome] or CLOSED, thread)

    async def decline(body: dict[str, Any]) -> None:
        await settle(body, "decline")

    async def cancel(body: dict[str, Any]) -> None:
        await settle(body, "cancel")

    async def done(body: dict[str, Any]) -> None:
        await settle(body, "accept")  # URL mode: the person went there and finished

    async def open_form(body: dict[str, Any], client: AsyncWebClient) -> None:
        user, question_id, channel, thread = _clicked(body)
        try:
            question = await store.get(question_id)
        except RedisError:
            await tell(channel, user, UNAVAILABLE, thread)
            return
        if question is None:
            await tell(channel, user, UNKNOWN, thread)
        elif question.user != user:
            await tell(channel, user, only_asker(question.user), thread)
        elif question.outcome is not None:
            await tell(channel, user, CLOSED, thread)
        else:
            view = form_view(question_id, question.server, question.message, question.schema)
            if view is not None:
                await client.views_open(trigger_id=body["trigger_id"], view=view)

    async def submit(body: dict[str, Any], view: dict[str, Any]) -> None:
        user, question_id = str(body["user"]["id"]), str(view.get("private_metadata") or "")
        try:
            question = await store.get(question_id)
            fields = form_fields(question.schema) if question is not None else "unknown"
            if question is None or isinstance(fields, str):
                return
            content = read_answer(fields, (view.get("state") or {}).get("values") or {})
            if isinstance(content, str):  # Slack's inputs make this rare: say it, the question stays open
                said = ours("Your answer was not sent: {why}. Press Answer to try again.", why=content)
                await tell(question.channel, user, said, question.thread_ts)
                return
            outcome = await store.answer(question_id, user, "accept", content)
        except RedisError:
            return
        if outcome == "not_yours":
            await tell(question.channel, user, only_asker(question.user), question.thread_ts)
        elif outcome != "ok":
            await tell(question.channel, user, SAID[outcome] or CLOSED, question.thread_ts)

    app.action(ANSWER_ACTION)(ack=_ack, lazy=[open_form])
    app.action(DECLINE_ACTION)(ack=_ack, lazy=[decline])
    app.action(CANCEL_ACTION)(ack=_ack, lazy=[cancel])
    app.action(DONE_ACTION)(ack=_ack, lazy=[done])
    app.action(LINK_ACTION)(_ack)  # a URL button: the browser opens it, Slack only needs the ack
    app.view(FORM_CALLBACK_ID)(ack=_ack, lazy=[submit])
