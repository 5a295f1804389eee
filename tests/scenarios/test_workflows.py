"""Canned on-call workflows from `/oncall` (SPEC §7, §8): the agent's permissions, approvals and audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis as sync_redis

from agent.workflow import load_workflows
from approvals.workflow_runs import RUNNING_KEY, WorkflowRun, WorkflowRunStore
from bot.queues import Queues
from fixtures.mcp_airflow import INCIDENT_DAG
from fixtures.waiting import wait_until
from tests.processes import kill_worker
from tests.scenarios.conftest import Scenario

CHANNEL = "C0INCIDENT"


def oncall(s: Scenario, user: str, text: str) -> None:
    assert s.ingress.post(s.ingress.slash_command(user, "/oncall", text, channel=CHANNEL)).status == 200


def runs(s: Scenario, user: str) -> list[WorkflowRun]:
    import asyncio

    import redis.asyncio as aioredis

    async def load() -> list[WorkflowRun]:
        client = aioredis.Redis.from_url(s.redis_url)
        try:
            return await WorkflowRunStore(client).recent("T0CHATOPS", user)
        finally:
            await client.aclose()

    return asyncio.run(load())


def progress_text(s: Scenario, run: WorkflowRun) -> str:
    assert run.message_ts is not None
    message = s.world.slack.message(CHANNEL, run.message_ts)
    assert message is not None
    return json.dumps(message.blocks)


def test_restart_failed_dag_pauses_for_approval_then_runs_and_reports(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("bob")
    oncall(s, "U0ALICE", f"run restart-failed-dag dag_id={INCIDENT_DAG}")
    s.runs_queued("U0ALICE")
    s.work()
    (run,) = runs(s, "U0ALICE")
    assert run.status == "waiting_approval"
    assert "list_dag_runs" in progress_text(s, run)
    assert s.world.servers["airflow"].ledger.count("clear_task_instances") == 0
    approval = s.approval(run.approvals[0])
    assert approval.tool == "clear_task_instances"
    assert approval.arguments["dag_id"] == INCIDENT_DAG
    assert approval.workflow_run_id == run.id
    s.click("U0BOB", approval)
    s.work()
    (run,) = runs(s, "U0ALICE")
    assert run.status == "succeeded", run.summary
    assert s.world.servers["airflow"].ledger.count("clear_task_instances") == 1
    assert [c.sub for c in s.world.servers["airflow"].record.tool_calls("clear_task_instances")] == [
        "u-alice"
    ]
    assert "Done" in progress_text(s, run)
    records = [json.loads(v[b"record"]) for _, v in s.redis.xrange("chatops:audit")]
    workflow_records = [r for r in records if r["kind"] == "workflow_run"]
    assert workflow_records[-1]["outcome"] == "succeeded"
    assert workflow_records[-1]["minutes_saved"] == 20


def test_a_rejected_step_ends_the_run_cleanly(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("bob")
    oncall(s, "U0ALICE", f"run restart-failed-dag dag_id={INCIDENT_DAG}")
    s.runs_queued("U0ALICE")
    s.work()
    (run,) = runs(s, "U0ALICE")
    approval = s.approval(run.approvals[0])
    submit = s.ingress.view_submission(
        "U0BOB",
        callback_id="approval_reject_modal",
        private_metadata=approval.id,
        values={"reason": {"reason_input": "wait for the backfill"}},
    )
    s.ingress.post(submit)
    # The decision is recorded first; the run's resumption is queued just after it.
    wait_until("the run's resumption", lambda: s.redis.exists(f"rq:job:wf-{run.id}-{approval.id}"))
    s.work()
    assert s.approval(approval.id).status.value == "REJECTED"
    (run,) = runs(s, "U0ALICE")
    assert run.status == "rejected"
    assert "wait for the backfill" in run.summary
    assert s.world.servers["airflow"].ledger.count("clear_task_instances") == 0


def test_an_expired_step_ends_the_run_cleanly(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    oncall(s, "U0ALICE", f"run restart-failed-dag dag_id={INCIDENT_DAG}")
    s.runs_queued("U0ALICE")
    s.work()
    (run,) = runs(s, "U0ALICE")
    approval_id = run.approvals[0]
    s.redis.hset(f"chatops:approval:{approval_id}", "expires_at", json.dumps(time.time() - 1))
    s.redis.zadd("chatops:approvals:pending", {approval_id: time.time() - 1})
    import redis as sync_redis

    from bot.queues import Queues

    Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()
    s.work()
    (run,) = runs(s, "U0ALICE")
    assert run.status == "expired"
    assert s.world.servers["airflow"].ledger.count("clear_task_instances") == 0


def test_a_missing_parameter_opens_a_modal_and_submitting_it_runs(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    oncall(s, "U0ALICE", "run spark-app-triage")
    modal = wait_until("the parameters modal", lambda: next(iter(s.world.slack.views()), None))
    assert modal["callback_id"] == "oncall_params"
    bad = s.ingress.view_submission(
        "U0ALICE",
        view_id=modal["id"],
        callback_id="oncall_params",
        private_metadata=modal["private_metadata"],
        values={
            "param_app_id": {"value": ""},
            "param_tail": {"value": {"type": "number_input", "value": "x"}},
        },
    )
    answer = s.ingress.post(bad)
    assert answer.json()["response_action"] == "errors"  # refused in the modal; nothing started
    assert runs(s, "U0ALICE") == []
    good = s.ingress.view_submission(
        "U0ALICE",
        view_id=modal["id"],
        callback_id="oncall_params",
        private_metadata=modal["private_metadata"],
        values={"param_app_id": {"value": "application_1764036000000_0042"}},
    )
    assert s.ingress.post(good).status == 200
    s.runs_queued("U0ALICE")
    s.work()
    (run,) = runs(s, "U0ALICE")
    assert run.status == "succeeded", run.summary
    assert s.world.servers["spark"].record.tool_calls("failed_stages")


def test_a_person_without_access_is_told_before_anything_runs(scenario: Scenario) -> None:
    s = scenario
    s.link("erin")  # ads-eng: presto yes, spark and airflow no
    oncall(s, "U0ERIN", "run incident-snapshot")
    told = s.told("U0ERIN", CHANNEL)
    assert "no workflow `incident-snapshot` you may run" in told[-1]
    assert runs(s, "U0ERIN") == []
    s.work()
    assert all(not server.record.tool_calls() for server in s.world.servers.values())


def test_help_list_and_status_answer_the_person(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    oncall(s, "U0ALICE", "help")
    assert "run" in s.told("U0ALICE", CHANNEL, 1)[-1]
    oncall(s, "U0ALICE", "list")
    listing = s.world.slack.wait_for(
        lambda: (
            [
                m
                for m in s.world.slack.ephemerals(CHANNEL, user="U0ALICE")
                if "restart-failed-dag" in json.dumps(m.blocks)
            ]
            or None
        )
    )
    assert listing
    oncall(s, "U0ALICE", "status")
    assert "not run any workflows" in s.told("U0ALICE", CHANNEL, 3)[-1]


def test_a_malformed_file_is_reported_and_the_rest_keep_working(tmp_path: Path) -> None:
    for name in os.listdir("workflows"):
        (tmp_path / name).write_text(Path("workflows", name).read_text())
    (tmp_path / "broken.yaml").write_text("name: broken\nsteps:\n  - id: x\n    call: nodot\n")
    found, _ = load_workflows(str(tmp_path))
    assert "restart-failed-dag" in found
    assert "broken" not in found
    report = subprocess.run(
        [sys.executable, "-m", "bot.cli", "workflows", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CHATOPS_NETGUARD": "1"},
    )
    assert report.returncode == 1
    assert "broken.yaml:" in report.stdout
    assert "ok   restart-failed-dag" in report.stdout


def test_a_run_whose_worker_dies_is_ended_and_its_channel_told(scenario: Scenario) -> None:
    """Steps may have side effects, so nothing is run again on its own: the run ends as failed, the
    thread of its progress message says where it stopped, and the audit has its end."""
    s = scenario
    s.link("alice")
    spark = s.world.servers["spark"]
    entered = spark.knobs.hang("list_applications")  # the second step: the worker dies waiting on it
    oncall(s, "U0ALICE", "run incident-snapshot")
    s.runs_queued("U0ALICE")
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1", "CHATOPS_TURN_LEASE_SECONDS": "3"}
    worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env, start_new_session=True)
    try:
        assert entered.wait(timeout=60)
        kill_worker(worker)
    finally:
        if worker.poll() is None:
            kill_worker(worker)
        spark.knobs.release("list_applications")
    (run,) = runs(s, "U0ALICE")
    assert run.status == "running"
    wait_until("its lease to lapse", lambda: s.redis.zrangebyscore(RUNNING_KEY, "-inf", time.time()) or None)
    Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()
    s.work()
    (run,) = runs(s, "U0ALICE")
    assert run.status == "failed"
    assert "cut off mid-way (its worker was lost or failed)" in run.summary
    assert run.message_ts is not None
    told = [m.text for m in s.bot_messages(CHANNEL, run.message_ts) if m.ts != run.message_ts]
    assert len(told) == 1
    assert "Run `/oncall run incident-snapshot` again" in told[0]
    (stopped,) = [m for m in s.bot_messages(CHANNEL, run.message_ts) if m.ts != run.message_ts]
    assert f'"down:{run.id}"' in json.dumps(stopped.blocks)  # a result like any other: feedback buttons
    records = [json.loads(v[b"record"]) for _, v in s.redis.xrange("chatops:audit")]
    (end,) = [r for r in records if r["kind"] == "workflow_run"]
    assert end["outcome"] == "failed"
    assert s.redis.zcard(RUNNING_KEY) == 0
    Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()
    s.work()  # a later sweep finds nothing more to say
    assert len([m for m in s.bot_messages(CHANNEL, run.message_ts) if m.ts != run.message_ts]) == 1
    assert len(spark.record.tool_calls("list_applications")) == 1  # nothing was run again
    assert s.world.servers["presto"].record.tool_calls("slow_queries") == []
