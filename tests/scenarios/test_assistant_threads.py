"""The bot as a Slack AI app (SPEC §7 "Asking", issue 19 item 2): a new assistant thread offers prompts from
what this person may use, a question there is answered in that thread with the status line shown while
working and the thread titled from the question; mentions keep working beside it."""

from __future__ import annotations

from fixtures.anthropic_fake import Body, Reply, text
from fixtures.slack import dm_channel
from fixtures.slack_world import JSON
from tests.scenarios.conftest import Scenario

ANSWER = "Presto is healthy: no queries have run longer than a minute."


def answer(_: Body) -> Reply:
    return text(ANSWER)


def start_thread(s: Scenario, user: str) -> str:
    started = s.ingress.assistant_thread_started(user, context_channel="C0DATAENG")
    assert s.ingress.post(started).status == 200
    return str(started.event["assistant_thread"]["thread_ts"])


def offered(s: Scenario, user: str, thread_ts: str) -> list[JSON]:
    channel = dm_channel(user)
    return s.world.slack.wait_for(lambda: s.world.slack.suggested_prompts(channel, thread_ts) or None)


def test_a_new_thread_offers_only_the_servers_and_workflows_the_person_may_use(scenario: Scenario) -> None:
    s = scenario
    s.link("bob")
    s.link("dave")
    bob = offered(s, "U0BOB", start_thread(s, "U0BOB"))
    dave = offered(s, "U0DAVE", start_thread(s, "U0DAVE"))

    assert 1 <= len(bob) <= 4
    assert 1 <= len(dave) <= 4
    said = {p["title"] + " | " + p["message"] for p in bob}
    assert not [p for p in said if "ledger" in p], said  # finance only: never suggested to bob
    assert not [p for p in said if "hive-legacy" in p], said  # suspended
    assert any("presto" in p or "spark" in p or "airflow" in p for p in said), said
    assert any(p.startswith("Run ") for p in said), said  # a workflow bob may run
    assert any("ledger" in p["message"] for p in dave), dave  # dave is in finance
    assert all("presto" not in p["message"] for p in dave), dave  # and not in data engineering


def test_a_person_not_linked_is_offered_to_connect_instead_of_prompts(scenario: Scenario) -> None:
    s = scenario
    thread_ts = start_thread(s, "U0CAROL")
    (told,) = s.world.slack.wait_for(
        lambda: s.world.slack.ephemerals(dm_channel("U0CAROL"), "U0CAROL") or None
    )
    assert "Connect your account" in told.text
    assert told.thread_ts == thread_ts
    assert s.world.slack.calls("assistant.threads.setSuggestedPrompts") == []


def test_a_question_in_the_thread_is_answered_there_with_status_and_title(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(answer)
    thread_ts = start_thread(s, "U0ALICE")
    offered(s, "U0ALICE", thread_ts)
    question = "Is presto slow <right now>? " + "more detail " * 10
    assert s.ingress.post(s.ingress.assistant_message("U0ALICE", thread_ts, question)).status == 200
    s.work()

    channel = dm_channel("U0ALICE")
    (msg,) = s.bot_messages(channel, thread_ts)
    shown = msg.text + "\n".join(str(b.get("text", {}).get("text", "")) for b in msg.blocks)
    assert ANSWER in shown
    statuses = [c.args.get("status") for c in s.world.slack.calls("assistant.threads.setStatus")]
    assert statuses == ["is looking into it…", ""]  # set while working, cleared at the end
    assert s.world.slack.status(channel, thread_ts) == ""
    title = s.world.slack.title(channel, thread_ts)
    assert title is not None
    assert title.startswith("Is presto slow &lt;right now&gt;?")
    assert len(title) <= 60
    assert title.endswith("…")

    # A second question in the same thread keeps the first one's title.
    s.ingress.post(s.ingress.assistant_message("U0ALICE", thread_ts, "and spark?"))
    s.work()
    assert len(s.world.slack.calls("assistant.threads.setTitle")) == 1


def test_mentions_still_work_and_show_no_assistant_status(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(answer)
    mention = s.ingress.app_mention("U0ALICE", "C0DATAENG", "is presto slow?")
    assert s.ingress.post(mention).status == 200
    s.work()
    (msg,) = s.bot_messages("C0DATAENG", str(mention.event["ts"]))
    assert ANSWER in msg.text + "\n".join(str(b.get("text", {}).get("text", "")) for b in msg.blocks)
    assert s.world.slack.calls("assistant.threads.setStatus") == []


def test_a_changed_thread_context_is_acknowledged_and_changes_nothing(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    thread_ts = start_thread(s, "U0ALICE")
    prompts = offered(s, "U0ALICE", thread_ts)
    event: JSON = {
        "type": "assistant_thread_context_changed",
        "assistant_thread": {
            "user_id": "U0ALICE",
            "context": {"channel_id": "C0GENERAL", "team_id": s.ingress.team_id},
            "channel_id": dm_channel("U0ALICE"),
            "thread_ts": thread_ts,
        },
        "event_ts": thread_ts,
    }
    assert s.ingress.post(s.ingress.event_callback(event)).status == 200
    assert s.world.slack.suggested_prompts(dm_channel("U0ALICE"), thread_ts) == prompts
    assert s.world.slack.calls("conversations.history") == []  # Bolt's default store is not used
