"""A server that talks to the person during their call (SPEC §7 "Server questions"), end to end: the real web
process, a real worker process running the turn (`chatops worker --burst`), real Redis, the fake Slack,
and fixtures/mcp_asking.py in the registry beside the world's servers.

The server's form question becomes a card in the thread; only the person whose call it is can open its
form (anyone else is told so, privately); their answer, given on the web process, reaches the server
through the worker that waits for it, and the answer the model gives is built on it; declining reaches the
server as a decline; no answer in time is a cancel and the card says so. A long tool's progress reports show
on the thread's progress line.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bot.question_card import ANSWER_ACTION, DECLINE_ACTION, FORM_CALLBACK_ID
from fixtures.anthropic_fake import Body, Reply, text, tool_results, tool_use
from fixtures.mcp_asking import AskingState, running_asking_mcp
from fixtures.registry import GOVERNANCE, OFFICIAL
from fixtures.slack import Message
from fixtures.waiting import wait_until
from tests.scenarios.conftest import Scenario

SAID = r"(booked [^;\\\"]+|the person chose \w+|index rebuilt: \d+ shards)"
CHANNEL = "C0INCIDENT"
ALICE, BOB = "U0ALICE", "U0BOB"


@pytest.fixture(scope="module")
def asking_server() -> Iterator[tuple[AskingState, str]]:
    with running_asking_mcp() as (_, state, _, url):
        yield state, url


@pytest.fixture
def asking(scenario: Scenario, asking_server: tuple[AskingState, str]) -> AskingState:
    state, url = asking_server
    state.reset()
    gov = {"status": "active", "owner_team": "ops", "auth": "none", "allowed_groups": ["*"], "resource": url}
    scenario.world.registry.add(
        {
            "server": {
                "name": "io.example/asking",
                "version": "1.0.0",
                "remotes": [{"type": "streamable-http", "url": url}],
            },
            "_meta": {OFFICIAL: {"status": "active", "isLatest": True}, GOVERNANCE: gov},
        }
    )
    return state


def calls(tool: str) -> Callable[[Body], Reply]:
    """The model calls `tool` once, then answers with what came back."""

    def script(body: Body) -> Reply:
        results = tool_results(body)
        if not results:
            return tool_use(f"asking__{tool}", {}, text_before="Asking the server.")
        said = re.search(SAID, json.dumps(results))
        return text(f"The server said: {said.group(1) if said else 'nothing I know'}.")

    return script


class Turn:
    """A mention whose turn runs on a real worker in the background while the test plays the people."""

    def __init__(self, s: Scenario, question: str) -> None:
        self.s = s
        self.mention = s.ingress.app_mention(ALICE, CHANNEL, question)
        self.ts = str(self.mention.event["ts"])
        s.ingress.post(self.mention)
        # RQ's worker wants the main thread; this one runs in a process of its own, as in production
        self._worker = threading.Thread(target=s.work_in_subprocess, daemon=True)
        self._worker.start()

    def card(self, action: str = ANSWER_ACTION) -> Message:
        def found() -> Message | None:
            return next(
                (m for m in self.s.bot_messages(CHANNEL, self.ts) if action in json.dumps(m.blocks)), None
            )

        return wait_until("the question's card in the thread", found, timeout=30)

    def click(self, user: str, action: str, card: Message, trigger_id: str | None = None) -> None:
        value = _button_value(card, action)
        request = self.s.ingress.block_actions(
            user, action, channel=CHANNEL, message_ts=card.ts, value=value, trigger_id=trigger_id
        )
        assert self.s.ingress.post(request).status == 200

    def finished(self) -> str:
        self._worker.join(timeout=120)
        assert not self._worker.is_alive(), "the turn did not finish"
        return " ".join(m.text for m in self.s.bot_messages(CHANNEL, self.ts))

    def card_now(self, card: Message) -> str:
        shown = self.s.world.slack.message(CHANNEL, card.ts)
        assert shown is not None
        return json.dumps(shown.blocks)


def _button_value(card: Message, action: str) -> str:
    for block in card.blocks or []:
        for element in block.get("elements", []):
            if element.get("action_id") == action:
                return str(element["value"])
    raise AssertionError(f"no {action} button on the card")


def field_ids(view: dict[str, Any]) -> dict[str, str]:
    """The modal's input blocks by label."""
    return {b["label"]["text"]: b["block_id"] for b in view["blocks"] if b["type"] == "input"}


def test_the_servers_form_is_answered_by_the_person_whose_call_it_is(
    scenario: Scenario, asking: AskingState
) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(calls("schedule_maintenance"))
    turn = Turn(s, "book a maintenance window for ingest")
    card = turn.card()
    shown = json.dumps(card.blocks)
    assert "*asking* asks <@U0ALICE>" in shown
    assert "Which maintenance window should I book" in shown
    assert "Only <@U0ALICE> can answer" in shown

    turn.click(BOB, ANSWER_ACTION, card, trigger_id="trigger-bob")  # someone else: told privately, no form
    assert "Only <@U0ALICE> can answer this question" in s.told(BOB, CHANNEL)[0]

    turn.click(ALICE, ANSWER_ACTION, card, trigger_id="trigger-alice")
    view = wait_until("the form", lambda: next(iter(s.world.slack.views()), None))
    assert len(s.world.slack.views()) == 1  # Bob's click opened nothing
    ids = field_ids(view)
    assert set(ids) == {"Minutes", "Reason", "Notify", "Severity"}
    # what Slack sends: every input's state, the untouched ones as the form showed them (their defaults)
    notify = next(b for b in view["blocks"] if b.get("block_id") == ids["Notify"])["element"]
    severity = next(b for b in view["blocks"] if b.get("block_id") == ids["Severity"])["element"]
    assert notify["initial_options"] == notify["options"]  # the server's default: ticked
    assert severity["initial_option"]["text"]["text"] == "low"
    values: dict[str, dict[str, Any]] = {
        ids["Reason"]: {"answer": "kernel patch"},
        ids["Minutes"]: {"answer": {"type": "number_input", "value": "45"}},
        ids["Notify"]: {"answer": {"type": "checkboxes", "selected_options": notify["initial_options"]}},
        ids["Severity"]: {"answer": {"type": "static_select", "selected_option": severity["options"][1]}},
    }
    submit = s.ingress.view_submission(ALICE, view_id=view["id"], callback_id=FORM_CALLBACK_ID, values=values)
    assert s.ingress.post(submit).status == 200

    said = turn.finished()
    # the answer reached the server, and the model built on it
    assert asking.answers == ["booked 45 minutes (high, notify=True) because kernel patch"]
    assert "booked 45 minutes" in said
    assert "<@U0ALICE> answered." in turn.card_now(card)
    assert ANSWER_ACTION not in turn.card_now(card)  # no live buttons once answered


def test_declining_reaches_the_server_and_a_late_click_is_told_it_is_closed(
    scenario: Scenario, asking: AskingState
) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(calls("schedule_maintenance"))
    turn = Turn(s, "book a maintenance window for ingest")
    card = turn.card()
    turn.click(ALICE, DECLINE_ACTION, card)
    said = turn.finished()
    assert asking.answers == ["the person chose decline; nothing was booked"]
    assert "the person chose decline" in said
    assert "<@U0ALICE> declined to answer." in turn.card_now(card)
    turn.click(ALICE, ANSWER_ACTION, card, trigger_id="trigger-late")
    assert "already closed" in s.told(ALICE, CHANNEL)[-1]
    assert s.world.slack.views() == []


def test_no_answer_in_time_is_a_cancel_and_the_card_says_so(scenario: Scenario, asking: AskingState) -> None:
    s = dataclasses.replace(scenario, env={**scenario.env, "CHATOPS_ELICITATION_TIMEOUT_SECONDS": "2"})
    s.link("alice")
    s.world.anthropic.set_default(calls("schedule_maintenance"))
    turn = Turn(s, "book a maintenance window for ingest")
    card = turn.card()
    said = turn.finished()
    assert asking.answers == ["the person chose cancel; nothing was booked"]
    assert "the person chose cancel" in said
    assert "No answer within 2 seconds: cancelled." in turn.card_now(card)


def test_a_long_tools_progress_shows_on_the_threads_progress_line(
    scenario: Scenario, asking: AskingState
) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(calls("reindex"))
    turn = Turn(s, "rebuild the search index")

    def progress_shows(words: str) -> Message | None:
        # On the progress line of the working message, or, where the answer streams, its task's details.
        shown = (
            m
            for m in s.bot_messages(CHANNEL, turn.ts)
            if words in json.dumps([m.blocks, m.chunks], ensure_ascii=False)
        )
        return next(shown, None)

    wait_until("the first progress report", lambda: progress_shows("33% · scanning shards"), timeout=30)
    asking.step.release()
    wait_until("the second progress report", lambda: progress_shows("67% · rebuilding"), timeout=30)
    asking.step.release()
    said = turn.finished()
    assert "index rebuilt" in said
    assert "hunter2" not in json.dumps(
        [m.blocks for m in s.world.slack.messages()]
    )  # its log stays in the log
