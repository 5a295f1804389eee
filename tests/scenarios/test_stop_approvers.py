"""Stop by someone other than the asker (issue 19 item 3): an approver for a server the turn is using may stop
it, from the web process while the turn runs in a `chatops worker` process; anyone else is told who may, and
the turn goes on. The asker is a person (their `sub`), so their other Slack account may stop it too."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bot.blocks import STOP_ACTION_ID
from fixtures.anthropic_fake import Body, FakeAnthropic, Reply, text, tool_use
from fixtures.incident_script import question_and_results
from fixtures.waiting import wait_until
from tests.scenarios.conftest import Scenario

CHANNEL = "C0DATAENG"
ANSWER = "Nothing unusual is running."
PRESTO = ("presto__query_history", {"state": "RUNNING"})
SPARK = ("spark__list_applications", {"state": "RUNNING"})


def held_after(fake: FakeAnthropic, call: tuple[str, dict[str, Any]] | None) -> Callable[[Body], Reply]:
    """Calls one tool (if any), then answers; the answer is held (the model still thinking) until the fake
    is released, so a person can click Stop while the turn runs."""

    def reply(body: Body) -> Reply:
        _, results = question_and_results(body.get("messages") or [])
        if call is not None and not results:
            return tool_use(call[0], call[1], text_before="Checking first.")
        fake.hang()  # before the gate is passed: this very answer waits for `release`
        return text(ANSWER)

    return reply


@contextmanager
def alices_turn(s: Scenario, call: tuple[str, dict[str, Any]] | None) -> Iterator[tuple[str, str]]:
    """Alice's question, run by another process; yields (thread ts, the working message's ts) while the model
    is asked after `call` (the tool already called). Leaving releases the model and waits for the worker."""
    s.world.anthropic.set_default(held_after(s.world.anthropic, call))
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "is anything stuck?")
    assert s.ingress.post(mention).status == 200
    ts = str(mention.event["ts"])
    worker = threading.Thread(target=s.work_in_subprocess)
    worker.start()
    try:
        asked = 1 if call is None else 2
        wait_until("the model asked", lambda: len(s.world.anthropic.requests()) >= asked, timeout=30)
        (working,) = wait_until(
            "the working message", lambda: s.bot_messages(CHANNEL, ts) or None, timeout=10
        )
        assert any(b.get("block_id") == "turn_stop" for b in working.blocks)
        yield ts, str(working.ts)
    finally:
        s.world.anthropic.release()
        worker.join(timeout=60)
    assert not worker.is_alive()


def click_stop(s: Scenario, user: str, working_ts: str) -> str:
    """`user` clicks Stop; what they alone are told (the reply to this click, not an earlier one)."""
    before = len(s.world.slack.ephemerals(CHANNEL, user))
    assert (
        s.ingress.post(
            s.ingress.block_actions(user, STOP_ACTION_ID, channel=CHANNEL, message_ts=working_ts)
        ).status
        == 200
    )
    told = wait_until(
        f"{user} to be told",
        lambda: s.world.slack.ephemerals(CHANNEL, user)[before:] or None,
        timeout=10,
    )
    return str(told[-1].text)


def stopped(s: Scenario, ts: str) -> None:
    """The turn ends, stopped, while its model call is still held (a released one could answer first)."""
    wait_until("the turn stopped", lambda: s.turn_status(CHANNEL, ts) == "stopped", timeout=30)


def shown(s: Scenario, ts: str) -> str:
    (msg,) = s.bot_messages(CHANNEL, ts)
    return "\n".join(str(b.get("text", {}).get("text", "")) for b in msg.blocks)


def test_an_approver_for_a_server_the_turn_used_stops_it_from_another_process(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("bob")  # presto-oncall: presto's kill_query names that group as its approvers
    with alices_turn(s, PRESTO) as (ts, working):
        assert click_stop(s, "U0BOB", working).startswith("Stopping")
        requests = len(s.world.anthropic.requests())
        stopped(s, ts)

    assert "Stopped by <@U0BOB>" in shown(s, ts)
    assert "Checking first." in shown(s, ts)  # what it had found so far
    assert ANSWER not in shown(s, ts)
    assert s.turn_status(CHANNEL, ts) == "stopped"
    assert len(s.world.anthropic.requests()) == requests  # the held model call was cancelled, not retried
    (record,) = s.audit("turn_stop")
    assert (record["outcome"], record["user"], record["sub"]) == ("stopped", "U0BOB", "u-bob")
    assert record["detail"] == "an approver for presto"


def test_a_linked_person_who_may_not_approve_is_refused_and_the_turn_finishes(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("erin")  # ads-eng: may use presto, approves nothing
    with alices_turn(s, PRESTO) as (ts, working):
        told = click_stop(s, "U0ERIN", working)
    assert told == "Only <@U0ALICE> or an approver for presto can stop this request."

    assert ANSWER in shown(s, ts)
    assert "Stopped" not in shown(s, ts)
    assert s.turn_status(CHANNEL, ts) == "answered"
    (record,) = s.audit("turn_stop")
    assert (record["outcome"], record["user"], record["sub"]) == ("denied", "U0ERIN", "u-erin")


def test_an_approver_who_has_not_linked_is_given_the_connect_link_and_may_then_stop_it(
    scenario: Scenario,
) -> None:
    """Bob approves for presto but never linked his account: his groups cannot be known, so he is refused,
    and handed the Connect link in the same reply; once linked, his next click stops the turn."""
    s = scenario
    s.link("alice")
    with alices_turn(s, PRESTO) as (ts, working):
        told = click_stop(s, "U0BOB", working)
        assert told.startswith("Only <@U0ALICE> or an approver for presto can stop this request. ")
        found = re.search(r"If you approve for presto, <(https?://[^|>]+)\|connect your account> first", told)
        assert found, told
        assert s.turn_status(CHANNEL, ts) != "stopped"

        assert s.browse_link("bob", found.group(1).replace("&amp;", "&")).status_code == 200
        assert click_stop(s, "U0BOB", working).startswith("Stopping")
        stopped(s, ts)

    assert "Stopped by <@U0BOB>" in shown(s, ts)
    denied, done = s.audit("turn_stop")
    assert (denied["outcome"], denied["user"], denied["sub"]) == ("denied", "U0BOB", "")
    assert (done["outcome"], done["sub"]) == ("stopped", "u-bob")


def test_an_approver_for_a_server_the_turn_did_not_use_is_refused(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("carol")  # presto-admins and presto-oncall; the turn uses spark only
    with alices_turn(s, SPARK) as (ts, working):
        told = click_stop(s, "U0CAROL", working)
    assert told == "Only <@U0ALICE> or an approver for spark can stop this request."
    assert ANSWER in shown(s, ts)
    assert s.turn_status(CHANNEL, ts) == "answered"


def test_before_its_first_tool_call_only_the_asker_may_stop_a_turn(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("carol")  # approves presto, which every question here could use
    with alices_turn(s, None) as (ts, working):
        told = click_stop(s, "U0CAROL", working)
    assert told == "Only <@U0ALICE>, who asked, can stop this request."
    assert s.turn_status(CHANNEL, ts) == "answered"


def test_the_askers_other_slack_account_may_stop_the_turn(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("alice", slack_user="U0ALICE2")  # one person (sub u-alice); she approves nothing on spark
    with alices_turn(s, SPARK) as (ts, working):
        assert click_stop(s, "U0ALICE2", working).startswith("Stopping")
        stopped(s, ts)

    assert "Stopped by <@U0ALICE2>" in shown(s, ts)
    assert s.turn_status(CHANNEL, ts) == "stopped"
    (record,) = s.audit("turn_stop")
    assert (record["outcome"], record["user"], record["sub"]) == ("stopped", "U0ALICE2", "u-alice")
