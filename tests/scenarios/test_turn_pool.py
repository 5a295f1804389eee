"""The turn pool (bot/turn_pool.py) as `chatops worker` runs it: many turns at once in one process, each a job
of the turn queue (approvals/turn_queue.py) with its state recorded; a pool that dies loses none of its
turns; a stop lets running turns finish, however many processes of the worker the stop reaches."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from approvals.turn_queue import GROUP, STREAM, job_key, job_state, queued_job_ids
from approvals.turns import RUNNING_KEY, turn_id_for
from bot.queues import ACTIONS
from fixtures.anthropic_fake import tool_results
from fixtures.slack import TEAM_ID
from fixtures.waiting import wait_until
from tests.processes import in_tree, kill_worker
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_recovery import answerer, lapsed, sweep_now

CHANNEL = "C0DATAENG"
QUESTIONS = ("which queries ran at 2am?", "is the ads cluster busy?", "what failed overnight?")


@contextmanager
def worker_process(s: Scenario, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`chatops worker` in its own session, its log in a file that `logged` reads."""
    full = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1", **env}
    with tempfile.NamedTemporaryFile(prefix="chatops-worker-", suffix=".log", delete=False) as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"], env=full, start_new_session=True, stderr=log
        )
    _logs[worker.pid] = Path(log.name)
    try:
        yield worker
    finally:
        if worker.poll() is None:
            kill_worker(worker)
        _logs.pop(worker.pid).unlink(missing_ok=True)


_logs: dict[int, Path] = {}


def logged(worker: subprocess.Popen[bytes]) -> str:
    return _logs[worker.pid].read_text(errors="replace")


def ask_all(s: Scenario) -> list[str]:
    """Three questions in three threads; the model fake holds its replies. Returns the threads' ts."""
    s.link("alice")
    s.world.anthropic.set_default(answerer)
    s.world.anthropic.hang()
    threads = []
    for question in QUESTIONS:
        mention = s.ingress.app_mention("U0ALICE", CHANNEL, question)
        assert s.ingress.post(mention).status == 200
        threads.append(mention.event["ts"])
    return threads


def running_jobs(s: Scenario) -> dict[str, int]:
    """Job id -> pid of the process running it (as the turn queue records it)."""
    found = {}
    for key in s.redis.scan_iter(match=job_key("*")):
        job = key.decode().removeprefix(job_key(""))
        if (state := job_state(s.redis, job)).get("status") == "running":
            found[job] = int(state["pid"])
    return found


def answers(s: Scenario, ts: str) -> list[str]:
    return [m.text for m in s.bot_messages(CHANNEL, ts) if "Answer to:" in m.text]


def answered(s: Scenario, ts: str) -> list[str] | None:
    return answers(s, ts) or None


def finished(s: Scenario, job: str) -> dict[str, str] | None:
    return state if (state := job_state(s.redis, job)).get("status") == "finished" else None


def test_one_pool_runs_several_turns_at_once_each_a_queued_job(scenario: Scenario) -> None:
    s = scenario
    threads = ask_all(s)
    turn_ids = [turn_id_for(TEAM_ID, CHANNEL, ts) for ts in threads]
    with worker_process(s) as worker:
        s.world.anthropic.wait_for_requests(3, timeout=60)  # all three waiting for the model at once
        running = wait_until(
            "three running turns", lambda: running_jobs(s) if len(running_jobs(s)) == 3 else None
        )
        assert sorted(running) == sorted(turn_ids)
        (pool,) = set(running.values())  # one process runs them all: the pool, a child of the worker
        assert pool != worker.pid
        assert in_tree(pool, worker.pid)
        s.world.anthropic.release()
        for ts in threads:
            wait_until("the answer", functools.partial(answered, s, ts), timeout=30)
        for turn_id in turn_ids:
            state = wait_until("the job recorded finished", functools.partial(finished, s, turn_id))
            assert state["result"] == "answered"
            assert int(state["pid"]) == pool
    for ts, question in zip(threads, QUESTIONS, strict=True):
        (answer,) = answers(s, ts)
        assert f"Answer to: {question}" in answer


def test_a_pool_killed_with_turns_in_flight_loses_none_of_them(scenario: Scenario) -> None:
    s = scenario
    threads = ask_all(s)
    with worker_process(s, CHATOPS_TURN_LEASE_SECONDS="3") as worker:
        s.world.anthropic.wait_for_requests(3, timeout=60)
        running = wait_until(
            "three running turns", lambda: running_jobs(s) if len(running_jobs(s)) == 3 else None
        )
        (pool,) = set(running.values())
        os.kill(pool, signal.SIGKILL)  # the pool alone: its parent is still up
        # The worker notices, lets its forking worker stop, and exits non-zero for its supervisor to restart.
        assert worker.wait(timeout=30) == 1
    s.world.anthropic.release()
    wait_until("the dead turns' leases to lapse", lambda: lapsed(s), timeout=15)
    sweep_now(s)
    with worker_process(s):  # the restarted worker: the sweep hands it the three turns again
        for ts in threads:
            wait_until("the answer", functools.partial(answered, s, ts), timeout=60)
        wait_until("every lease to be released", lambda: s.redis.zcard(RUNNING_KEY) == 0, timeout=30)
    for ts, question in zip(threads, QUESTIONS, strict=True):
        (message,) = s.bot_messages(CHANNEL, ts)  # one message: the recovery reused the working one
        assert f"Answer to: {question}" in message.text
    firsts = [r for r in s.world.anthropic.requests() if not tool_results(r.body)]
    assert len(firsts) == 6  # each question asked by its dead attempt and by its recovery, no more


def test_a_stopped_pool_finishes_its_running_turns_and_takes_no_new_one(scenario: Scenario) -> None:
    s = scenario
    threads = ask_all(s)
    with worker_process(s) as worker:
        s.world.anthropic.wait_for_requests(3, timeout=60)
        worker.send_signal(signal.SIGTERM)
        wait_until(
            "the worker to stop taking jobs", lambda: "stopping after the running turns" in logged(worker)
        )
        late = s.ingress.app_mention("U0ALICE", CHANNEL, "one more, while it stops")
        assert s.ingress.post(late).status == 200
        s.world.anthropic.release()
        assert worker.wait(timeout=60) == 0
    for ts, question in zip(threads, QUESTIONS, strict=True):
        (answer,) = answers(s, ts)
        assert f"Answer to: {question}" in answer
    late_id = turn_id_for(TEAM_ID, CHANNEL, late.event["ts"])
    assert late_id in queued_job_ids(s.redis)  # still queued
    assert s.work() >= 1  # and any worker answers it later
    (answer,) = answers(s, late.event["ts"])
    assert "Answer to: one more, while it stops" in answer


def test_a_turn_taken_by_a_pool_that_died_before_starting_it_is_answered(scenario: Scenario) -> None:
    """A pool reads a job (XREADGROUP) before it starts it. A pool killed in between leaves it pending on
    its consumer, where nobody would run it. A live pool claims it once it has been idle too long."""
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(answerer)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "what is stuck in the queue?")
    assert s.ingress.post(mention).status == 200
    turn_id = turn_id_for(TEAM_ID, CHANNEL, mention.event["ts"])
    # What the dead pool did: took the job, two minutes ago, and never touched it again.
    s.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    ((_, ((entry_id, _),)),) = s.redis.xreadgroup(GROUP, "dead-pool", {STREAM: ">"}, count=1)
    s.redis.xclaim(STREAM, GROUP, "dead-pool", 0, [entry_id], idle=120_000, justid=True)
    assert turn_id not in queued_job_ids(s.redis)
    with worker_process(s):  # a pool claims idle jobs as it starts
        (answer,) = wait_until("the answer", functools.partial(answered, s, mention.event["ts"]), timeout=60)
        wait_until("the job recorded finished", functools.partial(finished, s, turn_id))
        wait_until("nothing pending", lambda: s.redis.xpending(STREAM, GROUP)["pending"] == 0)
    assert "Answer to: what is stuck in the queue?" in answer


def test_a_stop_reaches_the_turn_pool_at_once_while_an_action_still_runs(scenario: Scenario) -> None:
    """SIGTERM to `chatops worker` while its forking worker runs a long job: the forking worker finishes
    that job, but the turn pool must stop taking turns now, not when the job is done."""
    s = scenario
    actions = Queue(ACTIONS, connection=s.redis, serializer=JSONSerializer)
    actions.enqueue_call("time.sleep", args=(600,), job_id="long-action")  # killed with the worker
    with worker_process(s) as worker:
        wait_until(
            "the forking worker to run the long job",
            lambda: any(
                w.get_current_job_id() == "long-action"
                for w in Worker.all(connection=s.redis, serializer=JSONSerializer)
            ),
            timeout=60,
        )
        wait_until("the turn pool to start", lambda: "slots on chatops-agent" in logged(worker), timeout=60)
        worker.send_signal(signal.SIGTERM)
        wait_until(  # another process's log: a bound for a loaded machine, not a speed
            "the turn pool to stop", lambda: "stopping after the running turns" in logged(worker), timeout=30
        )
        assert worker.poll() is None  # the forking worker is still finishing its job


@pytest.mark.parametrize("delivery", ["group", "pool first", "worker first"])
def test_a_stop_sent_to_the_whole_process_group_is_one_stop(scenario: Scenario, delivery: str) -> None:
    """ACCEPTANCE 46: systemd (KillMode=control-group) and Heroku signal every process of `chatops worker`,
    so the pool hears the stop twice: from the supervisor and from its parent. That is one stop: the turns
    in flight finish and are answered by this worker; nothing is left to the sweep. `group` is the literal
    `kill -TERM -<pgid>` (the two may land as one signal); the other two deliver them apart, in each order."""
    s = scenario
    threads = ask_all(s)
    with worker_process(s) as worker:
        s.world.anthropic.wait_for_requests(3, timeout=60)
        running = wait_until(
            "three running turns", lambda: running_jobs(s) if len(running_jobs(s)) == 3 else None
        )
        (pool,) = set(running.values())
        first, then = {"group": (-worker.pid, None), "pool first": (pool, worker.pid)}.get(
            delivery, (worker.pid, pool)
        )
        if first < 0:
            os.killpg(worker.pid, signal.SIGTERM)  # `kill -TERM -<pgid>`
        else:
            os.kill(first, signal.SIGTERM)
        wait_until(
            "the pool to stop taking turns", lambda: "stopping after the running turns" in logged(worker)
        )
        if then is not None:
            os.kill(then, signal.SIGTERM)
            wait_until(  # main took this as a second signal and left the turns to the sweep
                "the pool to hear the stop again",
                lambda: "already stopping" in logged(worker) or "left to the sweep" in logged(worker),
            )
        s.world.anthropic.release()
        assert worker.wait(timeout=60) == 0
        assert "left to the sweep" not in logged(worker)
    for ts, question in zip(threads, QUESTIONS, strict=True):
        (answer,) = answers(s, ts)
        assert f"Answer to: {question}" in answer
    assert {int(job_state(s.redis, j)["pid"]) for j in running} == {pool}  # answered by this worker
    assert s.redis.zcard(RUNNING_KEY) == 0  # no lease left for the sweep to take over
    firsts = [r for r in s.world.anthropic.requests() if not tool_results(r.body)]
    assert len(firsts) == 3  # each question asked once: nothing ran again
