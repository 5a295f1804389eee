"""The slash command deadline (ACCEPTANCE 12): `/oncall run …` whose planning is slow is acknowledged within
Slack's 3 seconds; the person hears through the command's response_url and sees progress while it plans; the
approval card follows once planning is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fixtures.mcp_airflow import INCIDENT_DAG
from fixtures.waiting import wait_until
from tests.faults.conftest import Scenario
from tests.scenarios.test_workflows import runs

CHANNEL = "C0INCIDENT"


def test_a_slow_planning_run_is_acked_at_once_tells_the_person_and_then_posts_its_approval_card(
    scenario: Scenario,
) -> None:
    s = scenario
    for person in ("alice", "bob"):
        s.link(person)
    airflow = s.world.servers["airflow"]
    planning = airflow.knobs.hang("list_dag_runs")  # the step that finds what to clear: as slow as we like
    s.world.anthropic.set_latency(15.0)  # and a slow model, should anything in the path consult it
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env)
    try:
        command = s.ingress.slash_command(
            "U0ALICE", "/oncall", f"run restart-failed-dag dag_id={INCIDENT_DAG}"
        )
        delivery = s.ingress.post(command)
        assert delivery.status == 200
        assert delivery.latency < 3.0
        assert planning.wait(60), "the worker never started planning"
        # While planning hangs: told through the response_url, progress visible in the channel, no card yet.
        response_url = command.payload["response_url"]
        wait_until("the response_url answer", lambda: s.world.slack.response_url_uses(response_url) >= 1)
        assert "Starting `restart-failed-dag`" in " ".join(m.text for m in s.world.slack.ephemerals(CHANNEL))
        (run,) = runs(s, "U0ALICE")
        assert run.status in ("queued", "running")
        progress = wait_until(
            "a progress line", lambda: next((r for r in runs(s, "U0ALICE") if r.message_ts), None)
        )
        message = s.world.slack.message(CHANNEL, str(progress.message_ts))
        assert message is not None
        assert "list_dag_runs" in json.dumps(message.blocks)
        assert not any("Approve" in json.dumps(m.blocks) for m in s.world.slack.messages(CHANNEL))
        airflow.knobs.release("list_dag_runs")
        waiting = wait_until(
            "the run to wait for approval",
            lambda: next(
                (r for r in runs(s, "U0ALICE") if r.status == "waiting_approval" and r.approvals), None
            ),
            timeout=60,
        )
    finally:
        airflow.knobs.release()
        s.world.anthropic.set_latency(0.0)
        worker.terminate()
        worker.wait(timeout=30)
    approval = s.approval(waiting.approvals[0])
    card = s.world.slack.message(approval.channel, s.card_ts(approval))
    assert card is not None
    assert any(b["type"] == "actions" for b in card.blocks)
    assert approval.tool == "clear_task_instances"
    assert s.world.slack.response_url_uses(response_url) <= 5
    assert airflow.ledger.count() == 0
