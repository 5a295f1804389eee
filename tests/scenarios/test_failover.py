"""A Redis that fails over (issue 21 item 6): REDIS_URL names three Sentinels watching a primary and a
replica, all real redis-server processes on loopback (fixtures.redis_sentinel).

The web process and one real `chatops worker` process run throughout; the primary is killed while two
approvals wait for decisions and a third is running its tool. Neither process is restarted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from approvals.execution import NOT_REPLICATED
from approvals.policy import FINAL_OUTCOMES
from approvals.store import Approval, Status
from approvals.turns import RUNNING_KEY as TURNS_RUNNING_KEY
from approvals.turns import lease_member, turn_id_for
from approvals.workflow_runs import WorkflowRun, WorkflowRunStore
from bot.queues import Queues
from bot.redis_clients import async_client, sync_client
from fixtures.anthropic_fake import text
from fixtures.mcp_airflow import INCIDENT_DAG
from fixtures.redis_sentinel import SentinelCluster
from fixtures.slack import TEAM_ID
from fixtures.waiting import wait_until
from fixtures.world import World
from tests.processes import kill_worker
from tests.scenarios.conftest import Scenario, fresh_world, scenario_of
from tests.scenarios.test_approvals import CHANNEL, fixer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    started = SentinelCluster().start()
    yield started
    started.stop()


@pytest.fixture
def failover(scenario_world: World, cluster: SentinelCluster) -> Iterator[Scenario]:
    fresh_world(scenario_world)
    with scenario_of(scenario_world, cluster.url) as s:
        for person in ("alice", "bob", "carol"):
            s.link(person)
        s.world.anthropic.set_default(fixer)
        yield s


def ask(s: Scenario, question: str) -> tuple[str, Approval]:
    """Ask in a new thread; the running worker proposes a call that waits for approval."""
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, question)
    s.ingress.post(mention)
    ts = mention.event["ts"]
    found = wait_until(
        f"an approval card for {question!r}",
        lambda: [a for a in s.approvals(CHANNEL, ts) if a.cards] or None,
        timeout=60,
    )
    return ts, found[0]


def calls(s: Scenario, tool: str) -> int:
    server = "presto" if tool == "kill_query" else "airflow"
    return len(s.world.servers[server].record.tool_calls(tool))


def settled(s: Scenario, approval: Approval) -> Approval:
    return wait_until(
        f"approval {approval.id} to end",
        lambda: (lambda a: a if a.status in FINAL_OUTCOMES else None)(s.approval(approval.id)),
    )


def test_after_a_failover_pending_approvals_decide_the_running_one_runs_once_and_the_bot_answers(
    failover: Scenario, cluster: SentinelCluster
) -> None:
    s = failover
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"],
        env=env,
        start_new_session=True,
        stderr=subprocess.DEVNULL,
    )
    entered = s.world.servers["presto"].knobs.hang("kill_query")
    try:
        _, running = ask(s, "kill the runaway backfill")
        s.world.registry.patch_governance(
            "io.example/airflow",
            {"tools": {"clear_task_instances": {"approver_groups": ["airflow-admins", "presto-oncall"]}}},
        )
        _, pending = ask(s, "clear the failed tasks")
        s.click("U0BOB", running)
        s.click("U0CAROL", running)
        assert entered.wait(60), "the worker never reached the tool"
        assert s.approval(running.id).status == Status.RUNNING

        cluster.kill_primary()  # mid-call: the tool has been asked, its outcome not yet recorded
        cluster.wait_for_promotion()
        # The promoted replica knows the action started: it is RUNNING there, never APPROVED again.
        assert s.approval(running.id).status == Status.RUNNING
        s.world.servers["presto"].knobs.release()
        assert settled(s, running).status == Status.SUCCEEDED

        # The approval that was pending when the primary died still decides, on the same processes, and
        # runs once a replica can confirm its start again (the old primary's machine is back).
        cluster.rejoin_old_primary()
        s.click("U0BOB", pending)
        s.click("U0CAROL", pending)
        decided = settled(s, pending)
        assert decided.status == Status.SUCCEEDED, decided.outcome_detail
        assert calls(s, "clear_task_instances") == 1
        assert calls(s, "kill_query") == 1  # the one running during the failover never again

        # The sweep (crash detection, re-enqueueing lost approved jobs) finds nothing to run again.
        Queues(sync_client(s.redis_url)).enqueue_sweep_now()
        s.world.anthropic.set_default(lambda _: text("All quiet since the failover."))
        mention = s.ingress.app_mention("U0ALICE", CHANNEL, "anything else burning?")
        s.ingress.post(mention)
        wait_until(
            "the bot to answer the next question",
            lambda: any("All quiet" in m.text for m in s.bot_messages(CHANNEL, mention.event["ts"])),
        )
        assert (calls(s, "kill_query"), calls(s, "clear_task_instances")) == (1, 1)
        assert worker.poll() is None, "the worker died in the failover"
    finally:
        s.world.servers["presto"].knobs.release()
        if worker.poll() is None:
            kill_worker(worker)


def test_a_start_no_replica_confirms_runs_nothing_and_the_thread_is_told(
    failover: Scenario, cluster: SentinelCluster
) -> None:
    s = failover
    ts, approval = ask_in_process(s, "kill the runaway backfill")
    s.click("U0BOB", approval)
    s.click("U0CAROL", approval)
    assert cluster.replica._proc is not None
    os.kill(cluster.replica._proc.pid, signal.SIGSTOP)  # a replica that has fallen behind
    try:
        s.work()
    finally:
        os.kill(cluster.replica._proc.pid, signal.SIGCONT)
    done = s.approval(approval.id)
    assert done.status == Status.FAILED
    assert done.outcome_detail == NOT_REPLICATED
    assert calls(s, "kill_query") == 0  # the tool was never called
    thread = " ".join(m.text for m in s.bot_messages(CHANNEL, ts))
    assert "nothing ran" in thread
    s.work()  # nothing is left to run it later either
    assert calls(s, "kill_query") == 0


def ask_in_process(s: Scenario, question: str) -> tuple[str, Approval]:
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, question)
    s.ingress.post(mention)
    s.work()
    ts = mention.event["ts"]
    (approval,) = s.approvals(CHANNEL, ts)
    return ts, approval


def test_a_turn_whose_claim_no_replica_confirms_waits_for_the_sweep_and_is_answered_once(
    failover: Scenario, cluster: SentinelCluster
) -> None:
    s = failover
    s.world.anthropic.set_default(lambda _: text("Spend is on track today."))
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "how is spend today?")
    s.ingress.post(mention)
    ts = mention.event["ts"]

    def answers() -> int:
        return sum("Spend is on track" in m.text for m in s.bot_messages(CHANNEL, ts))

    assert cluster.replica._proc is not None
    os.kill(cluster.replica._proc.pid, signal.SIGSTOP)  # a replica that has fallen behind
    try:
        s.work()
    finally:
        os.kill(cluster.replica._proc.pid, signal.SIGCONT)
    assert answers() == 0  # not run on a claim a failover could lose
    # Its lease lapses (as it would after CHATOPS_TURN_LEASE_SECONDS) and the sweep takes the turn over.
    member = lease_member(turn_id_for(TEAM_ID, CHANNEL, ts), "first")
    s.redis.zadd(TURNS_RUNNING_KEY, {member: time.time() - 1})
    Queues(sync_client(s.redis_url)).enqueue_sweep_now()
    s.work()
    assert answers() == 1


def test_a_workflow_whose_start_no_replica_confirms_runs_no_step_and_says_so(
    failover: Scenario, cluster: SentinelCluster
) -> None:
    s = failover
    command = s.ingress.slash_command(
        "U0ALICE", "/oncall", f"run restart-failed-dag dag_id={INCIDENT_DAG}", channel=CHANNEL
    )
    assert s.ingress.post(command).status == 200
    s.runs_queued("U0ALICE")
    assert cluster.replica._proc is not None
    os.kill(cluster.replica._proc.pid, signal.SIGSTOP)  # a replica that has fallen behind
    try:
        s.work()
    finally:
        os.kill(cluster.replica._proc.pid, signal.SIGCONT)

    async def load() -> list[WorkflowRun]:
        client = async_client(s.redis_url)
        try:
            return await WorkflowRunStore(client).recent(TEAM_ID, "U0ALICE")
        finally:
            await client.aclose()

    (run,) = asyncio.run(load())
    assert run.status == "failed"
    assert "could not confirm" in run.summary
    assert s.world.servers["airflow"].record.tool_calls("list_dag_runs") == []  # no step ran
    assert any("could not confirm" in text for text in s.told("U0ALICE", CHANNEL))  # the person who ran it
    s.work()  # and nothing runs it later
    assert s.world.servers["airflow"].record.tool_calls("list_dag_runs") == []
