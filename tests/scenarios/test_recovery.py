"""A worker that dies mid-turn does not lose the conversation (bot/recovery.py): the turn's lease lapses, the
sweep runs it again in the same "working" message, and a turn that keeps failing is reported once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import redis as sync_redis

from approvals.turn_queue import job_state
from approvals.turns import RUNNING_KEY, turn_id_for
from bot.queues import Queues
from fixtures.anthropic_fake import Body, Reply, first_user_text, text, tool_results, tool_use
from fixtures.slack import TEAM_ID
from fixtures.waiting import wait_until
from tests.processes import in_tree, kill_worker
from tests.scenarios.conftest import Scenario

CHANNEL = "C0DATAENG"


def answerer(body: Body) -> Reply:
    """One read-only look at Presto, then the answer (naming the question, so threads can be told apart)."""
    if not tool_results(body):
        return tool_use("presto__query_history", {"limit": 1})
    return text(f"Answer to: {first_user_text(body).rsplit(':', 1)[-1].strip()}")


def sweep_now(s: Scenario) -> None:
    Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()


def lease_of(s: Scenario, turn_id: str, attempt: str) -> float | None:
    return s.redis.zscore(RUNNING_KEY, f"{turn_id}|{attempt}")


def lapsed(s: Scenario) -> bool:
    """Some lease has ended (its worker stopped renewing it)."""
    return bool(s.redis.zrangebyscore(RUNNING_KEY, "-inf", time.time()))


def test_a_worker_killed_mid_turn_is_taken_over_by_the_sweep_and_answers_once(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(answerer)
    s.world.anthropic.hang()  # the worker will be waiting for the model when it dies
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "what ran on presto last night?")
    ts = mention.event["ts"]
    turn_id = turn_id_for(TEAM_ID, CHANNEL, ts)
    assert s.ingress.post(mention).status == 200
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1", "CHATOPS_TURN_LEASE_SECONDS": "3"}
    worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env, start_new_session=True)
    try:
        s.world.anthropic.wait_for_requests(1, timeout=30)
        (working,) = wait_until("the working message", lambda: s.bot_messages(CHANNEL, ts) or None)
        connection = sync_redis.Redis.from_url(s.redis_url)
        state = wait_until("the job recorded running", lambda: job_state(connection, turn_id) or None)
        assert state["status"] == "running"
        assert in_tree(int(state["pid"]), worker.pid)  # our worker is the one mid-turn
        kill_worker(worker)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        s.world.anthropic.release()
    assert lease_of(s, turn_id, "first") is not None
    assert s.turn_status(CHANNEL, ts) == "running"

    # The queue does not run it again by itself: the job is left taken by the dead pool's consumer.
    assert job_state(connection, turn_id)["status"] == "running"
    assert s.work() == 0

    wait_until("the dead worker's lease to lapse", lambda: lapsed(s), timeout=15)
    sweep_now(s)
    s.work()
    messages = s.bot_messages(CHANNEL, ts)
    assert [m.ts for m in messages] == [working.ts]  # the same message, now the answer; nothing else
    assert "Answer to: what ran on presto last night?" in messages[0].text
    assert s.turn_status(CHANNEL, ts) == "answered"
    assert s.redis.zcard(RUNNING_KEY) == 0
    firsts = [r for r in s.world.anthropic.requests() if not tool_results(r.body)]
    assert len(firsts) == 2  # the dead attempt's question and the recovery's; read-only work may repeat

    sweep_now(s)  # a later sweep finds nothing to take over
    s.work()
    assert [m.ts for m in s.bot_messages(CHANNEL, ts)] == [working.ts]
    assert len([r for r in s.world.anthropic.requests() if not tool_results(r.body)]) == 2


def test_a_turn_that_keeps_failing_is_retried_twice_then_reported_once_and_frees_its_thread(
    scenario: Scenario,
) -> None:
    # 3 s, the shortest allowed: renewals every second stay on time under a loaded machine (1 s did not).
    s = replace(scenario, settings=scenario.settings.model_copy(update={"turn_lease_seconds": 3}))
    s.link("alice")
    s.world.anthropic.set_default(answerer)
    s.world.slack.fail_next("chat.postMessage", error="channel_not_found", times=3)
    s.world.slack.fail_next("chat.startStream", error="channel_not_found", times=3)  # streamed or not
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "why is daily_ad_metrics late?")
    ts = mention.event["ts"]
    s.ingress.post(mention)
    s.work()  # the first attempt fails: its lease is left to lapse
    for _ in range(3):  # recover-1, recover-2, then the person is told
        wait_until("the failed attempt's lease to lapse", lambda: lapsed(s), timeout=20)
        sweep_now(s)
        s.work()
    (told,) = s.bot_messages(CHANNEL, ts)
    assert "couldn't finish this request" in told.text
    assert "tried 3 times" in told.text
    assert s.turn_status(CHANNEL, ts) == "failed"
    assert s.redis.zcard(RUNNING_KEY) == 0
    sweep_now(s)
    s.work()
    assert len(s.bot_messages(CHANNEL, ts)) == 1  # told once

    follow_up = s.ingress.app_mention("U0ALICE", CHANNEL, "try once more", thread_ts=ts)
    s.ingress.post(follow_up)
    s.work()
    texts = [m.text for m in s.bot_messages(CHANNEL, ts)]
    assert any("Answer to:" in t for t in texts), texts  # the thread was not left held
