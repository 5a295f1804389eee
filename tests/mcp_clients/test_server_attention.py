"""A server that talks to the person during a call (fixtures/mcp_asking.py), through the real gateway.

Its form question reaches whoever the session's `Attention` names, with the server, the tool and the requested
schema; the reply (with the schema's defaults for what was left empty) reaches the server, as do a decline
and a cancel; asking that fails is a cancel, never an error in the call. Progress notifications reach the
progress hook. Log messages go to the bot's log at debug, with secrets redacted, and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from fixtures.mcp_asking import LOGGED_SECRET, AskingState, running_asking_mcp
from mcp_clients.questions import Attention, Question, Reply
from tests.mcp_clients.conftest import Env
from tests.mcp_clients.test_hostile_servers import entry


@pytest.fixture(scope="module")
def asking_server() -> Iterator[tuple[AskingState, str]]:
    with running_asking_mcp() as (_, state, _, url):
        yield state, url


@pytest.fixture
def asking(env: Env, asking_server: tuple[AskingState, str]) -> AskingState:
    state, url = asking_server
    state.reset()
    env.world.registry.add(entry("io.example/asking", url))
    return state


@dataclass
class Person:
    reply: Reply | None
    asked: list[Question] = field(default_factory=list)

    async def ask(self, question: Question) -> Reply:
        self.asked.append(question)
        if self.reply is None:
            raise RuntimeError("Slack is down")
        return self.reply


async def call(env: Env, attention: Attention | None, tool: str) -> tuple[bool, str]:
    async with env.gateway.session(await env.caller("alice"), attention) as session:
        await session.tools()
        outcome = await session.call(f"asking__{tool}", {})
    return outcome.ok, outcome.text


async def test_a_form_question_reaches_the_person_and_their_answer_the_server(
    env: Env, asking: AskingState
) -> None:
    person = Person(Reply("accept", {"reason": "kernel patch", "minutes": 45}))
    ok, text = await call(env, Attention(questions=person), "schedule_maintenance")
    assert ok, text
    (question,) = person.asked
    assert (question.server, question.tool, question.mode) == ("asking", "schedule_maintenance", "form")
    assert question.message.startswith("Which maintenance window")
    assert question.schema is not None
    assert question.schema["required"] == ["reason"]
    # what the person left empty is the schema's default (notify, severity)
    assert asking.answers == ["booked 45 minutes (low, notify=True) because kernel patch"]


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (Reply("decline"), "the person chose decline"),
        (Reply("cancel"), "the person chose cancel"),
        (None, "the person chose cancel"),  # asking failed: a cancel, and the call still ends normally
    ],
)
async def test_decline_cancel_and_a_failure_to_ask_reach_the_server_as_such(
    env: Env, asking: AskingState, reply: Reply | None, said: str
) -> None:
    ok, text = await call(env, Attention(questions=Person(reply)), "schedule_maintenance")
    assert ok, text
    assert asking.answers == [f"{said}; nothing was booked"]


async def test_without_someone_to_answer_the_server_is_told_nobody_can(env: Env, asking: AskingState) -> None:
    ok, _text = await call(env, None, "schedule_maintenance")
    assert not ok
    assert asking.answers == []  # the tool never ran on a made-up answer


async def test_progress_reaches_the_hook_and_log_messages_only_the_debug_log(
    env: Env, asking: AskingState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mcp_clients.questions")
    seen: list[tuple[str, str, float, float | None, str | None]] = []

    async def progress(server: str, tool: str, done: float, total: float | None, what: str | None) -> None:
        seen.append((server, tool, done, total, what))
        asking.step.release()  # the tool waits for each step to be seen before it goes on

    async def never(question: Question) -> Reply:
        raise AssertionError("reindex asks nothing")

    attention = Attention(questions=type("Q", (), {"ask": staticmethod(never)})(), progress=progress)
    ok, text = await asyncio.wait_for(call(env, attention, "reindex"), 30)
    assert ok, text
    assert [(s, t, d, n, w) for s, t, d, n, w in seen] == [
        ("asking", "reindex", 1.0, 3.0, "scanning shards"),
        ("asking", "reindex", 2.0, 3.0, "rebuilding"),
        ("asking", "reindex", 3.0, 3.0, "done"),
    ]
    said = [r.getMessage() for r in caplog.records if r.name == "mcp_clients.questions"]
    assert any("server asking says (warning" in line and "reindex started" in line for line in said), said
    assert not any("hunter2" in line for line in said)
    assert "hunter2" not in text
    assert LOGGED_SECRET not in caplog.text
