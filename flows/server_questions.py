"""A server's question during a person's turn, put to that person in the thread (SPEC §7 "Server questions").

The question is recorded (approvals/questions.py), its card posted in the thread by the Slack edge
(`QuestionCards`), and the turn waits for the person's answer, which the web process hands over through
Redis, for at most `timeout` seconds (CHATOPS_ELICITATION_TIMEOUT_SECONDS; the turn's own time limit may end
it sooner). No answer in time is a cancel, and the card says so; a question the edge cannot show (a schema
outside the form subset, a link that is not a web address) is declined with the reason, on the card.

Why a wait and not a pause: a turn runs as a task on the turn pool's shared event loop, so a waiting
question holds no process and no event loop, only its turn's slot, and only until the timeout. A pause
(the turn ending as a value and resuming from the answer, as for approvals) would free the slot too, but
it needs the server to resume the call: only servers on the 2026-07-28 protocol can (their question rides
an `InputRequiredResult` with `request_state`); an older server holds its `tools/call` open while it asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from approvals.questions import OpenQuestion, QuestionStore
from approvals.turns import Turn
from flows.cancels import raise_if_cancelled
from mcp_clients.questions import Question, Questions, Reply

__all__ = ["QuestionCards", "ServerQuestions", "TurnQuestions", "Unaskable"]

log = logging.getLogger(__name__)

CARD_UPDATE_SECONDS = 10.0  # closing a card after the turn was cancelled: bounded, the turn is ending
# Kept back from the turn's own time limit: the server must still finish its call and the model answer.
TURN_MARGIN_SECONDS = 20.0
MIN_WAIT_SECONDS = 10.0  # less left than this: the question is cancelled without asking


@dataclass(frozen=True)
class Unaskable:
    """Why the edge could not show the question (it said so in the thread)."""

    reason: str


class QuestionCards(Protocol):
    """The question in Slack: posted in the turn's thread, then closed with its outcome."""

    async def post(
        self, turn: Turn, question_id: str, question: Question, *, timeout: float
    ) -> str | Unaskable:
        """Post the card (its ts), or say in the thread why the question cannot be shown."""

    async def closed(
        self, turn: Turn, card_ts: str, question: Question, outcome: str, *, timeout: float
    ) -> None:
        """The card shows the outcome (accept, decline, cancel, timeout, ended) and no live buttons."""


class ServerQuestions:
    def __init__(self, store: QuestionStore, cards: QuestionCards, *, timeout: float) -> None:
        self.store = store
        self.cards = cards
        self.timeout = timeout

    def for_turn(self, turn: Turn, *, until: float | None = None) -> TurnQuestions:
        """`until` (time.monotonic) is when the turn's own time runs out: no question outlives it."""
        return TurnQuestions(self, turn, until)


class TurnQuestions(Questions):
    """The questions of one turn: answered only by its requester."""

    def __init__(self, questions: ServerQuestions, turn: Turn, until: float | None) -> None:
        self._q = questions
        self._turn = turn
        self._until = until

    def _timeout(self) -> float:
        """How long this question may wait: the setting, unless the turn's own time runs out first (then
        what is left of it, or 0 when too little is left to be worth asking)."""
        if self._until is None:
            return self._q.timeout
        left = self._until - time.monotonic() - TURN_MARGIN_SECONDS
        if left >= self._q.timeout:
            return self._q.timeout
        return left if left >= MIN_WAIT_SECONDS else 0.0

    async def ask(self, question: Question) -> Reply:
        turn, store, cards, timeout = self._turn, self._q.store, self._q.cards, self._timeout()
        if timeout <= 0:
            log.info("question from %s cancelled: the request has too little time left", question.server)
            return Reply("cancel")
        question_id = secrets.token_urlsafe(12)
        record = OpenQuestion(
            question_id, turn.team, turn.channel, turn.thread_ts, turn.user, question.server, question.tool,
            question.mode, question.message, question.schema, question.url,
        )  # fmt: skip
        await store.open(record, open_for=timeout)  # before the card: a click finds the record
        posted = await cards.post(turn, question_id, question, timeout=timeout)
        if isinstance(posted, Unaskable):
            await store.close(question_id, "decline")
            log.info("question from %s declined: %s", question.server, posted.reason)
            return Reply("decline")
        try:  # from the moment the card is up: a turn ended at any point after it still closes it
            await store.set_card(question_id, posted)
            raise_if_cancelled()  # a cancel dropped while the card was recorded (flows.cancels)
            answered = await store.wait(question_id, seconds=timeout)
        except asyncio.CancelledError:  # the turn ended (its time limit, a stop) while the person thought
            await self._ended(question_id, posted, question, timeout)
            raise
        if answered is None:
            await cards.closed(turn, posted, question, "timeout", timeout=timeout)
            return Reply("cancel")
        await cards.closed(turn, posted, question, answered.action, timeout=timeout)
        return Reply(answered.action, answered.content)

    async def _ended(self, question_id: str, card_ts: str, question: Question, timeout: float) -> None:
        with contextlib.suppress(Exception):  # the turn is ending anyway; a card left open says less
            closing = self._close_ended(question_id, card_ts, question, timeout)
            await asyncio.wait_for(closing, CARD_UPDATE_SECONDS)

    async def _close_ended(self, question_id: str, card_ts: str, question: Question, timeout: float) -> None:
        if await self._q.store.close(question_id, "ended"):
            await self._q.cards.closed(self._turn, card_ts, question, "ended", timeout=timeout)
