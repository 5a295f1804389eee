"""Asking for workflow runs (SPEC §7 /oncall): which workflows a person may run here, starting one, and
which runs they may see. Running it is flows.workflow; the Slack side is bot.oncall_listeners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from agent.workflow import Workflow
from approvals.workflow_runs import WorkflowRun, WorkflowRunStore
from flows.ports import Identities
from flows.workflow_access import may_run, may_see_run
from flows.workflow_catalog import WorkflowCatalog
from mcp_clients.tokens import Identity
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot
from registry_cache.view import Person

__all__ = ["WorkflowRequests", "WorkflowSchedule"]


class WorkflowSchedule(Protocol):
    """Runs a workflow run on a worker (bot.queues.Queues)."""

    def enqueue_workflow(self, run_id: str) -> str: ...


@dataclass(frozen=True)
class WorkflowRequests:
    runs: WorkflowRunStore
    catalog: WorkflowCatalog
    registry: SharedSnapshot
    identities: Identities
    schedule: WorkflowSchedule

    async def visible(self, identity: Identity, channel: str) -> list[Workflow]:
        """Workflows whose every step's server and tool the registry lets this person use here."""
        try:
            view = await self.registry.view()
        except RegistryUnavailable:
            return []
        person = Person(identity.sub, identity.email, identity.groups)
        found = [w for w in self.catalog.current().values() if may_run(view, person, w, channel)]
        return sorted(found, key=lambda w: w.name)

    async def start(
        self,
        *,
        team: str,
        channel: str,
        user: str,
        workflow: Workflow,
        params: dict[str, Any],
        thread_ts: str | None = None,
    ) -> WorkflowRun:
        identity = await self.identities.identity(team, user)  # the person every step runs as (SPEC §5)
        run = await self.runs.create(
            workflow=workflow.name,
            params=params,
            team=team,
            channel=channel,
            user=user,
            sub=identity.sub if identity is not None else "",
            thread_ts=thread_ts,
        )
        self.schedule.enqueue_workflow(run.id)
        return run

    async def seen_by(self, team: str, user: str, run_id: str | None) -> list[WorkflowRun]:
        """The run `run_id` if this person may see it (else none: whether it exists stays unsaid), or
        their recent runs."""
        if run_id is None:
            return await self.runs.recent(team, user)
        run = await self.runs.get(run_id)
        return [run] if run is not None and await self._may_see(run, team, user) else []

    async def _may_see(self, run: WorkflowRun, team: str, user: str) -> bool:
        if run.team == team and run.user == user:
            return True  # the starter needs neither a link nor the registry to see their own run
        try:
            view = await self.registry.view()
        except RegistryUnavailable:
            view = None
        identity = await self.identities.identity(team, user)
        workflow = self.catalog.current().get(run.workflow)
        return may_see_run(run, team, user, identity=identity, workflow=workflow, view=view)
