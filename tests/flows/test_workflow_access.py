"""Who may see a workflow run (`/oncall status <id>`): its starter, and people of the same Slack team who may
run that workflow where it ran; nobody else, whatever they know of its id."""

from __future__ import annotations

from pathlib import Path

from agent.workflow import load_workflows
from approvals.workflow_runs import WorkflowRun
from fixtures.registry import FakeRegistry, dead_urls
from flows.workflow_access import may_see_run
from mcp_clients.tokens import Identity
from registry_cache.model import parse_entries
from registry_cache.view import RegistryView

SHIPPED = Path(__file__).resolve().parents[2] / "workflows"
NAMES = ("PRESTO_URL", "SPARK_URL", "AIRFLOW_URL", "LEDGER_URL", "STATUSPAGE_URL", "HIVE_URL", "SEARCH_URL")


def person(user: str, *groups: str, team: str = "T0CHATOPS") -> Identity:
    return Identity(team, user, f"u-{user}", f"{user}@example.com", frozenset(groups), 0.0, ())


def test_a_run_is_seen_by_its_starter_and_by_those_who_may_run_it_in_that_team_only() -> None:
    entries, _ = parse_entries(FakeRegistry.from_file(urls=dead_urls(NAMES)).entries())
    view = RegistryView(entries)
    workflow = load_workflows(str(SHIPPED))[0]["incident-snapshot"]  # airflow, spark, presto: data-eng
    run = WorkflowRun("w0123456789", workflow.name, {}, "T0CHATOPS", "C0INCIDENT", "U0ALICE", 0.0)

    def sees(team: str, user: str, identity: Identity | None) -> bool:
        return may_see_run(run, team, user, identity=identity, workflow=workflow, view=view)

    assert sees("T0CHATOPS", "U0ALICE", None)  # the starter, even unlinked
    assert sees("T0CHATOPS", "U0BOB", person("U0BOB", "data-eng"))
    assert not sees("T0CHATOPS", "U0ERIN", person("U0ERIN", "ads-eng"))  # presto only
    assert not sees("T0CHATOPS", "U0DAVE", None)
    assert not sees("T0OTHER", "U0ALICE", person("U0ALICE", "data-eng", team="T0OTHER"))  # same id, not them
    assert not sees("T0OTHER", "U0BOB", person("U0BOB", "data-eng", team="T0OTHER"))
    assert not may_see_run(  # no registry to judge by: only the starter
        run, "T0CHATOPS", "U0BOB", identity=person("U0BOB", "data-eng"), workflow=workflow, view=None
    )
