"""Answers streamed into the thread (SPEC §7 "While working"): the model's words as written, each tool
call as a task, one message in the end; and the fallback to message updates where Slack will not stream."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import redis.asyncio as aioredis

from agent.plan import PLAN_TOOL_NAME
from approvals.impact import default_months, monthly_stats
from bot.blocks import FEEDBACK_ACTION_ID, STOP_ACTION_ID
from fixtures.anthropic_fake import Body, Reply, message, text, tool_results, tool_use, tool_uses
from fixtures.incident_script import question_and_results
from fixtures.slack import TEAM_ID
from fixtures.slack_records import Message
from fixtures.waiting import wait_until
from tests.scenarios.conftest import Scenario, turn_id_for

CHANNEL = "C0DATAENG"
ANSWER = "Two slow queries, both from etl-backfill."


def two_tools(body: Body) -> Reply:
    """Says what it will do, asks presto twice (two steps), then answers."""
    _, results = question_and_results(body.get("messages") or [])
    if not results:
        return tool_use("presto__query_history", {"state": "RUNNING"}, text_before="Checking Presto first.")
    if len(results) == 1:
        return tool_use("presto__slow_queries", {"min_seconds": 60}, text_before="Now the slow ones.")
    return text(ANSWER)


def ask(s: Scenario, question: str = "which presto queries are slow?") -> str:
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, question)
    assert s.ingress.post(mention).status == 200
    s.work()
    return str(mention.event["ts"])


def test_an_answer_streams_its_words_and_two_tool_tasks_then_becomes_the_answer(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(two_tools)
    ts = ask(s)

    (msg,) = s.bot_messages(CHANNEL, ts)  # one message: the stream became the answer
    assert not msg.streaming
    assert msg.recipient == (TEAM_ID, "U0ALICE")
    assert ANSWER in "\n".join(str(b.get("text", {}).get("text", "")) for b in msg.blocks)
    assert (msg.metadata or {}).get("event_payload", {}).get("marker", "").endswith(":first:working")
    said = "".join(c["text"] for c in msg.chunks if c["type"] == "markdown_text")
    assert said.startswith("Checking Presto first.")
    assert "Now the slow ones." in said
    tasks = msg.tasks()
    assert [(t["title"], t["status"]) for t in tasks.values()] == [
        ("presto · query_history", "complete"),
        ("presto · slow_queries", "complete"),
    ]
    assert all(t["details"].endswith(("ms", " s")) for t in tasks.values())
    # The words went out before the first tool was called, not with the answer.
    first_words = next(c for c in s.world.slack.calls("chat.appendStream") if "Checking" in str(c.args))
    first_call = s.world.servers["presto"].record.tool_calls("query_history")[0]
    assert first_words.monotonic <= first_call.at
    assert s.world.slack.calls("chat.postMessage") == []  # no separate working message
    assert s.turn_status(CHANNEL, ts) == "answered"


PLAN_TITLE = "Why presto is slow"
STEPS = ("Running queries", "Slow queries", "Explain the cause")


def planning(title: str = PLAN_TITLE, steps: tuple[str, ...] = STEPS) -> Callable[[Body], Reply]:
    """States a 3-step plan with its first call, restates it with each later step, then answers."""

    def plan(*statuses: str) -> tuple[str, dict[str, object]]:
        listed = [{"title": t, "status": s} for t, s in zip(steps, statuses, strict=True)]
        return PLAN_TOOL_NAME, {"title": title, "steps": listed}

    def reply(body: Body) -> Reply:
        _, results = question_and_results(body.get("messages") or [])  # the plan's results count too
        if not results:
            first = plan("in_progress", "pending", "pending")
            return tool_uses(first, ("presto__query_history", {"state": "RUNNING"}), text_before="Checking.")
        if len(results) == 2:
            return tool_uses(plan("complete", "in_progress", "pending"), ("presto__slow_queries", {}))
        if len(results) == 4:
            return tool_uses(plan("complete", "complete", "in_progress"))
        return text(ANSWER)

    return reply


def statuses(msg: Message, task_id: str) -> list[str]:
    return [str(c["status"]) for c in msg.chunks if c["type"] == "task_update" and c["id"] == task_id]


def test_a_plan_the_model_states_shows_as_slacks_plan_display_beside_the_tool_tasks(
    scenario: Scenario,
) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(planning())
    ts = ask(s)

    (msg,) = s.bot_messages(CHANNEL, ts)
    assert ANSWER in "\n".join(str(b.get("text", {}).get("text", "")) for b in msg.blocks)
    assert msg.task_display_mode == "plan"
    assert [c["title"] for c in msg.chunks if c["type"] == "plan_update"] == [PLAN_TITLE]  # sent once
    tasks = msg.tasks()
    assert [(tasks[f"plan-{i}"]["title"], tasks[f"plan-{i}"]["status"]) for i in (1, 2, 3)] == [
        (step, "complete") for step in STEPS
    ]
    assert statuses(msg, "plan-1") == ["in_progress", "complete"]
    assert statuses(msg, "plan-2") == ["pending", "in_progress", "complete"]
    assert statuses(msg, "plan-3") == ["pending", "in_progress", "complete"]  # done once it answered
    assert [(t["title"], t["status"]) for i, t in tasks.items() if i.startswith("task-")] == [
        ("presto · query_history", "complete"),
        ("presto · slow_queries", "complete"),
    ]
    kinds = [c["type"] if c["type"] != "task_update" else c["id"][:4] for c in msg.chunks]
    assert kinds.index("plan_update") < kinds.index("task")  # the plan showed before the first tool ran
    # A local tool: no server saw it, the audit holds only the two real calls.
    audited = [str(fields) for _, fields in s.redis.xrange("chatops:audit")]
    assert not any(PLAN_TOOL_NAME in a for a in audited)
    assert sum("slow_queries" in a or "query_history" in a for a in audited) == 2
    assert s.turn_status(CHANNEL, ts) == "answered"


def test_where_slack_will_not_stream_the_plan_shows_as_lines_in_the_progress_message(
    scenario: Scenario,
) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(planning())
    s.world.slack.refuse_streaming("feature_not_enabled")
    ts = ask(s)

    (msg,) = s.bot_messages(CHANNEL, ts)
    assert ANSWER in "\n".join(str(b.get("text", {}).get("text", "")) for b in msg.blocks)
    # Which of the plan's states an update caught depends on the throttle; each shows the whole plan.
    updates = s.world.slack.calls("chat.update")[:-1]  # the last one is the answer
    shown = ["\n".join(str(b.get("text", {}).get("text", "")) for b in u.args["blocks"]) for u in updates]
    lines = re.compile(
        rf"\*Plan:\* {PLAN_TITLE}\n[✓▸·] Running queries\n[✓▸·] Slow queries\n[✓▸·] Explain the"
    )
    assert any(lines.search(text) for text in shown)
    assert s.turn_status(CHANNEL, ts) == "answered"


def test_hostile_plan_text_is_escaped_and_its_secrets_redacted(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    token = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
    title = "<!channel> look at <@U0BOB>"
    steps = ("Running queries", f"Use {token}", "<https://evil.example|click>")
    s.world.anthropic.set_default(planning(title, steps))
    ts = ask(s)

    (msg,) = s.bot_messages(CHANNEL, ts)
    shown = str(msg.chunks)
    assert token not in shown
    assert all(raw not in shown for raw in ("<!channel>", "<@U0BOB>", "<https://"))
    assert msg.plan_title() == "&lt;!channel&gt; look at &lt;@U0BOB&gt;"
    assert "xoxb" not in msg.tasks()["plan-2"]["title"]
    assert msg.tasks()["plan-3"]["title"].startswith("&lt;https://evil.example")

    s.world.slack.refuse_streaming("feature_not_enabled")  # the same through message updates
    again = ask(s, "and again?")
    (msg,) = s.bot_messages(CHANNEL, again)
    updates = [str(c.args) for c in s.world.slack.calls("chat.update")]
    assert any("look at &lt;@U0BOB&gt;" in u for u in updates)
    assert not any(token in u or "<!channel>" in u or "<@U0BOB>" in u for u in updates)


def malformed_plans(body: Body) -> Reply:
    """Three plans no one could show (not an object, 50 steps, wrong types), then the answer."""
    _, results = question_and_results(body.get("messages") or [])
    fifty = {"title": "All", "steps": [{"title": f"s{i}", "status": "pending"} for i in range(50)]}
    if not results:
        not_an_object = {"type": "tool_use", "name": PLAN_TOOL_NAME, "input": ["a", "list"]}
        return message(not_an_object, stop_reason="tool_use")
    if len(results) == 1:
        return tool_uses((PLAN_TOOL_NAME, fifty), ("presto__query_history", {"state": "RUNNING"}))
    if len(results) == 3:
        return tool_use(PLAN_TOOL_NAME, {"title": 7, "steps": "all of them"})
    return text(ANSWER)


def test_a_malformed_plan_is_a_tool_error_the_model_reads_and_the_turn_goes_on(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(malformed_plans)
    ts = ask(s)

    (msg,) = s.bot_messages(CHANNEL, ts)
    assert ANSWER in "\n".join(str(b.get("text", {}).get("text", "")) for b in msg.blocks)
    assert msg.plan_title() is None
    assert not any(i.startswith("plan-") for i in msg.tasks())
    told = [r for req in s.world.anthropic.requests()[1:] for r in tool_results(req.body)]
    refused = [str(r["content"]) for r in told if "Plan not shown" in str(r["content"])]
    assert all(r["is_error"] for r in told if "Plan not shown" in str(r["content"]))
    assert len(refused) == 3
    assert "must be an object" in refused[0]
    assert "1 to 10 steps (it has 50)" in refused[1]
    assert "`steps` must be a list" in refused[2]
    assert [t["title"] for t in msg.tasks().values()] == ["presto · query_history"]  # the real call ran
    assert s.turn_status(CHANNEL, ts) == "answered"


def test_where_slack_will_not_stream_the_answer_comes_by_message_updates_and_is_not_asked_again(
    scenario: Scenario,
) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(two_tools)
    s.world.slack.refuse_streaming("feature_not_enabled")
    ts = ask(s)

    (msg,) = s.bot_messages(CHANNEL, ts)
    assert ANSWER in "\n".join(str(b.get("text", {}).get("text", "")) for b in msg.blocks)
    assert not msg.chunks
    assert len(s.world.slack.calls("chat.startStream")) == 1  # asked once, refused
    assert s.world.slack.calls("chat.update")  # the working message was updated into the answer

    again = ask(s, "and now?")  # remembered for the workspace: no second refusal to wait for
    assert len(s.bot_messages(CHANNEL, again)) == 1
    assert len(s.world.slack.calls("chat.startStream")) == 1
    assert s.turn_status(CHANNEL, again) == "answered"


def test_a_lost_stream_start_response_leaves_one_message(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(two_tools)
    s.world.slack.reset_after_read("chat.startStream")  # started, but the bot never hears the ts
    ts = ask(s)

    (msg,) = s.bot_messages(CHANNEL, ts)
    assert not msg.streaming
    assert ANSWER in "\n".join(str(b.get("text", {}).get("text", "")) for b in msg.blocks)
    assert len(s.world.slack.calls("chat.startStream")) == 1


def slow_second_step(body: Body) -> Reply:
    """Reads presto once, then takes its time (long enough for a person to lose patience)."""
    _, results = question_and_results(body.get("messages") or [])
    if not results:
        return tool_use("presto__query_history", {"state": "RUNNING"}, text_before="Checking Presto first.")
    return replace(text("Too late."), delay=30.0)


def test_stop_clicked_in_web_ends_a_turn_running_in_another_process_and_says_what_it_found(
    scenario: Scenario,
) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(slow_second_step)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are slow?")
    s.ingress.post(mention)
    ts = str(mention.event["ts"])
    worker = threading.Thread(target=s.work_in_subprocess)  # the turn runs in a `chatops worker` process
    worker.start()
    try:
        wait_until("the second model call", lambda: len(s.world.anthropic.requests()) >= 2, timeout=30)
        (stream,) = s.bot_messages(CHANNEL, ts)
        assert any(b.get("block_id") == "turn_stop" for b in stream.blocks)

        bob = s.ingress.block_actions("U0BOB", STOP_ACTION_ID, channel=CHANNEL, message_ts=stream.ts)
        assert s.ingress.post(bob).status == 200
        told = wait_until(
            "bob to be told", lambda: s.world.slack.ephemerals(CHANNEL, "U0BOB") or None, timeout=10
        )
        assert "Only <@U0ALICE>" in told[0].text
        alice = s.ingress.block_actions("U0ALICE", STOP_ACTION_ID, channel=CHANNEL, message_ts=stream.ts)
        assert s.ingress.post(alice).status == 200
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert len(s.world.anthropic.requests()) == 2  # the pending call was cancelled, not retried
    finally:
        s.world.anthropic.reset()
        worker.join(timeout=60)

    (msg,) = s.bot_messages(CHANNEL, ts)
    shown = "\n".join(str(b.get("text", {}).get("text", "")) for b in msg.blocks)
    assert "Stopped by <@U0ALICE>" in shown
    assert "Checking Presto first." in shown  # what it had found so far
    assert not any(b.get("block_id") == "turn_stop" for b in msg.blocks)
    assert s.turn_status(CHANNEL, ts) == "stopped"
    assert len(s.world.servers["presto"].record.tool_calls("query_history")) == 1


def calibrated_hours(s: Scenario) -> tuple[float, float]:
    async def read() -> tuple[float, float]:
        client = aioredis.Redis.from_url(s.redis_url)
        try:
            (month,) = default_months(time.time())[1:]
            stats = await monthly_stats(client, months=[month])
            return stats.month(month).total.hours_saved, stats.calibration.hours.get(month, 0.0)
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_a_thumbs_down_on_an_answer_takes_its_calls_out_of_the_calibrated_hours(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(two_tools)
    ts = ask(s)
    estimate, calibrated = calibrated_hours(s)
    assert estimate > 0
    assert calibrated == estimate

    (msg,) = s.bot_messages(CHANNEL, ts)
    turn_id = turn_id_for(TEAM_ID, CHANNEL, ts)
    down = s.ingress.block_actions(
        "U0ALICE", FEEDBACK_ACTION_ID, channel=CHANNEL, message_ts=msg.ts, value=f"down:{turn_id}"
    )
    assert s.ingress.post(down).status == 200
    wait_until("the vote to be stored", lambda: s.redis.hget(f"chatops:feedback:{turn_id}", "U0ALICE"))

    after_estimate, after_calibrated = calibrated_hours(s)
    assert after_estimate == estimate  # the owners' estimate stays as it was
    assert after_calibrated == calibrated - estimate  # this turn's minutes no longer count
