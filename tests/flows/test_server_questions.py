"""A server's question during a turn (flows/server_questions.py) over the real question store in Redis: the
answer crosses from whoever answers to the waiting turn; a question the edge cannot show is declined; a
turn that ends while it waits closes the card; a turn with too little time left does not ask at all."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from approvals.questions import QuestionStore
from approvals.turns import Turn
from flows.server_questions import ServerQuestions, Unaskable
from mcp_clients.questions import Question, Reply

FORM = {"type": "object", "properties": {"reason": {"type": "string"}}}
TURN = Turn("t1", "T1", "C1", "channel", "U0ALICE", "hi", "1.0", "1.0", 0.0)


@dataclass
class Cards:
    """The Slack edge as the flow sees it: what it was asked to show."""

    refuse: str | None = None
    posted: list[str] = field(default_factory=list)  # question ids
    outcomes: list[str] = field(default_factory=list)  # what each closed card said
    shown: asyncio.Event = field(default_factory=asyncio.Event)  # set once a card is posted

    async def post(
        self, turn: Turn, question_id: str, question: Question, *, timeout: float
    ) -> str | Unaskable:
        self.posted.append(question_id)
        self.shown.set()
        return Unaskable(self.refuse) if self.refuse else f"ts-{question_id}"

    async def closed(
        self, turn: Turn, card_ts: str, question: Question, outcome: str, *, timeout: float
    ) -> None:
        self.outcomes.append(outcome)


async def posted(cards: Cards) -> str:
    await cards.shown.wait()
    return cards.posted[0]


async def test_the_askers_answer_reaches_the_waiting_turn_and_nobody_elses_does(
    aredis: aioredis.Redis,
) -> None:
    store, cards = QuestionStore(aredis), Cards()
    asking = ServerQuestions(store, cards, timeout=30).for_turn(TURN)
    waiting = asyncio.ensure_future(asking.ask(Question("presto", "kill", "form", "why?", schema=FORM)))
    question_id = await asyncio.wait_for(posted(cards), 10)
    assert await store.answer(question_id, "U0BOB", "accept", {"reason": "mine"}) == "not_yours"
    assert await store.answer(question_id, "U0ALICE", "accept", {"reason": "patch"}) == "ok"
    assert await store.answer(question_id, "U0ALICE", "decline") == "closed"  # decided once
    assert await asyncio.wait_for(waiting, 10) == Reply("accept", {"reason": "patch"})
    assert cards.outcomes == ["accept"]
    assert await aredis.exists(f"chatops:question:{question_id}:reply") == 0  # the content is gone once read


async def test_a_question_the_edge_cannot_show_is_declined(aredis: aioredis.Redis) -> None:
    cards = Cards(refuse="field 'a' is a nested object")
    asking = ServerQuestions(QuestionStore(aredis), cards, timeout=30).for_turn(TURN)
    assert await asking.ask(Question("x", None, "form", "?", schema={})) == Reply("decline")
    assert cards.outcomes == []


async def test_a_turn_that_ends_while_waiting_closes_the_card(aredis: aioredis.Redis) -> None:
    store, cards = QuestionStore(aredis), Cards()
    asking = ServerQuestions(store, cards, timeout=300).for_turn(TURN)
    waiting = asyncio.ensure_future(asking.ask(Question("presto", None, "form", "why?", schema=FORM)))
    question_id = await asyncio.wait_for(posted(cards), 10)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    assert cards.outcomes == ["ended"]
    assert await store.answer(question_id, "U0ALICE", "accept") == "closed"


async def test_a_turn_with_too_little_time_left_does_not_ask(aredis: aioredis.Redis) -> None:
    cards = Cards()
    asking = ServerQuestions(QuestionStore(aredis), cards, timeout=300).for_turn(
        TURN, until=time.monotonic() + 25
    )
    assert await asking.ask(Question("presto", None, "form", "why?", schema=FORM)) == Reply("cancel")
    assert cards.posted == []
