"""What a workflow may do and who may see it (SPEC §6, §7, §8): service-identity steps that need approval run,
once approved, as the service identity; steps nobody may approve fail before anything runs, saying why;
`/oncall status <run-id>` shows a run only to its starter and to people who may run that workflow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from approvals.workflow_runs import WorkflowRun
from bot.settings import Role, load_settings
from bot.web import build_web
from fixtures.mcp_airflow import INCIDENT_DAG
from fixtures.server import bind_loopback, start
from fixtures.slack_ingress import SlackIngress
from fixtures.waiting import wait_until
from fixtures.world import SIGNING_SECRET
from registry_cache.view import NOBODY_MAY_APPROVE
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_workflows import CHANNEL, oncall, runs

SERVICE_RESTART = """
name: service-restart
description: Clear the failed tasks of a DAG's latest failed run, as the bot's service identity
identity: service
params:
  dag_id: {type: string, required: true, description: Airflow DAG id}
steps:
  - id: runs
    call: airflow.list_dag_runs
    args: {dag_id: "{{ params.dag_id }}", state: failed, limit: 1}
  - id: clear
    call: airflow.clear_task_instances
    args: {dag_id: "{{ params.dag_id }}", run_id: "{{ steps.runs.result.runs[0].run_id }}"}
"""
POST_STATUS = """
name: post-status
description: Publish an incident update on the public status page
identity: user
params:
  message: {type: string, required: true, description: What customers read}
steps:
  - id: post
    call: statuspage.post_update
    args: {incident_id: INC-2041, message: "{{ params.message }}"}
"""
CHECKED_LOOK = """
name: checked-look
description: Read the status page, but only after someone approves
identity: user
steps:
  - id: look
    call: statuspage.current_incidents
    args: {}
    approval: required
"""


@contextmanager
def with_workflows(s: Scenario, folder: Path, **files: str) -> Iterator[Scenario]:
    """The same world and Redis, served by a web process (and worked by jobs) reading `folder`'s workflows."""
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    sock = bind_loopback()
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {**s.world.env(public_url=public_url, redis_url=s.redis_url), "WORKFLOWS_DIR": str(folder)}
    settings = load_settings(Role.WEB_HTTP, env=env)
    web = start(build_web(settings, s.bot), sock=sock)
    s.world.allow_redirect(web.url)
    ingress = SlackIngress(web.url, SIGNING_SECRET, slack=s.world.slack)
    try:
        yield Scenario(s.world, settings, env, s.bot, web, ingress, s.redis_url)
    finally:
        ingress.close()
        web.stop()


def ran(s: Scenario, user: str, *commands: str) -> list[WorkflowRun]:
    """Start each `/oncall` command as `user`, let the workers do what they can, and return the runs."""
    for queued, command in enumerate(commands, start=len(runs(s, user)) + 1):
        oncall(s, user, command)
        wait_until(f"run {queued} to be queued", lambda n=queued: len(runs(s, user)) >= n)
    s.work()
    return runs(s, user)


def test_an_approved_step_of_a_service_workflow_runs_as_the_service_identity(
    scenario: Scenario, tmp_path: Path
) -> None:
    scenario.world.idp.set_service_groups(["service", "data-eng"])  # Airflow itself admits data-eng only
    with with_workflows(scenario, tmp_path, **{"service-restart": SERVICE_RESTART}) as s:
        s.link("alice")
        s.link("bob")
        (run,) = ran(s, "U0ALICE", f"run service-restart dag_id={INCIDENT_DAG}")
        assert run.status == "waiting_approval", run.summary
        approval = s.approval(run.approvals[0])
        assert (approval.tool, approval.identity, approval.requester) == (
            "clear_task_instances",
            "service",
            "U0ALICE",
        )
        card = s.world.slack.message(CHANNEL, s.card_ts(approval))
        assert card is not None
        assert "*Runs as*\\nthe service identity" in json.dumps(card.blocks)
        airflow = s.world.servers["airflow"]
        assert airflow.ledger.count("clear_task_instances") == 0
        s.click("U0BOB", approval)
        s.work()
        (run,) = runs(s, "U0ALICE")
        assert run.status == "succeeded", run.summary
        assert airflow.ledger.count("clear_task_instances") == 1
        assert [c.sub for c in airflow.record.tool_calls("clear_task_instances")] == ["svc:chatops-bot"]
        assert {c.sub for c in airflow.record.tool_calls()} == {"svc:chatops-bot"}  # never alice's token
        records = [json.loads(v[b"record"]) for _, v in s.redis.xrange("chatops:audit")]
        (call,) = [r for r in records if r["kind"] == "tool_call" and r["approval_id"] == approval.id]
        assert (call["outcome"], call["sub"]) == ("succeeded", "u-alice")  # who answers for it
        assert "service identity" in call["detail"]


def test_a_step_nobody_may_approve_fails_before_anything_runs_and_says_why(
    scenario: Scenario, tmp_path: Path
) -> None:
    files = {"post-status": POST_STATUS, "checked-look": CHECKED_LOOK}
    with with_workflows(scenario, tmp_path, **files) as s:
        s.link("alice")
        both = ran(
            s,
            "U0ALICE",
            'run post-status message="Cause identified."',  # the tool needs approval
            "run checked-look",  # the step asks for approval of a read-only tool
        )
        assert len(both) == 2
        for run in both:
            assert run.status == "failed", (run.workflow, run.status)
            assert "withheld" in run.summary
            assert NOBODY_MAY_APPROVE in run.summary
            assert run.approvals == []
        statuspage = s.world.servers["statuspage"]
        assert statuspage.ledger.count("post_update") == 0
        assert statuspage.record.tool_calls() == []


def status_reply(s: Scenario, user: str, run_id: str) -> str:
    before = len(s.world.slack.ephemerals(CHANNEL, user=user))
    oncall(s, user, f"status {run_id}")
    return s.told(user, CHANNEL, before + 1)[-1]


def test_a_run_is_shown_only_to_its_starter_and_to_people_who_may_run_that_workflow(
    scenario: Scenario,
) -> None:
    s = scenario
    for person in ("alice", "bob", "erin"):
        s.link(person)
    (run,) = ran(s, "U0ALICE", "run incident-snapshot")  # airflow, spark and presto: data-eng may run it
    assert run.status == "succeeded", run.summary
    assert run.id in status_reply(s, "U0ALICE", run.id)  # the starter
    assert run.id in status_reply(s, "U0BOB", run.id)  # data-eng: may run incident-snapshot too
    nothing = f"No such run: `{run.id}`."
    assert status_reply(s, "U0ERIN", run.id) == nothing  # ads-eng: no spark, no airflow
    assert status_reply(s, "U0DAVE", run.id) == nothing  # not even linked
    assert status_reply(s, "U0ERIN", "w0000000000") == "No such run: `w0000000000`."  # same words
