"""Running canned on-call workflows (SPEC §8): run, pause for approval, resume, and runs whose worker died.

A run shows one progress message (in the channel, or the thread it was started from) that follows its
steps; approval cards for its sensitive steps go in that message's thread. Steps run through the same
gateway as the agent: the registry permissions of the person who ran it, with that person's token, or the
bot's service identity for `identity: service` workflows. A sensitive step of a service workflow runs, once
approved, with the service identity too: the approval records (and seals) `identity=service` and its card
says so. Starting a run and who may see it: flows.workflow_requests; the Slack side: bot.workflow_output.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from agent.workflow import Workflow
from agent.workflow_runner import (
    Declined,
    RunState,
    StepProgress,
    StepRecord,
    WorkflowDone,
    WorkflowFailed,
    WorkflowPaused,
    run_workflow,
)
from approvals.audit import Audit, Outcome, run_record
from approvals.bindings import BoundTools, Unbound, bound_identity
from approvals.leases import held_lease
from approvals.replication import NotReplicated
from approvals.store import Approval, Status
from approvals.turns import Turn
from approvals.workflow_runs import WorkflowRun, WorkflowRunStore
from flows.ports import LinkOffers, Sessions
from flows.workflow_access import withheld_steps
from flows.workflow_catalog import WorkflowCatalog
from mcp_clients.gateway import Caller, GatewaySession, ToolSpec
from mcp_clients.tokens import Identity, TokenBroker
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot

__all__ = ["RunProgress", "WorkflowApprovals", "WorkflowFlow", "WorkflowOutput"]

log = logging.getLogger(__name__)


class RunProgress(StepProgress, Protocol):
    """A run's progress message (bot.workflow_progress.WorkflowProgress)."""

    async def post(self) -> str:
        """Put the message up; its ts."""

    def restore(self, log_records: list[StepRecord]) -> None:
        """Show the steps a resumed run has already done."""

    async def waiting(self, step_id: str, call: str) -> None:
        """Show that a step waits for approval (its card is in the message's thread)."""

    async def ended(self, status: str, message: str) -> None:
        """Show how the run ended, under its steps."""


class WorkflowOutput(Protocol):
    """A run as people see it (bot.workflow_output.SlackWorkflowOutput)."""

    def progress(self, run: WorkflowRun, workflow: Workflow) -> RunProgress: ...

    async def connect(self, run: WorkflowRun, url: str) -> None:
        """Ask the person who started the run, alone, to link their account at `url`."""

    async def ended(self, run: WorkflowRun, status: str, message: str) -> None:
        """Tell the person who started the run how it ended (a run with no progress message)."""

    async def stopped(self, run: WorkflowRun, message: str, *, marker: str) -> None:
        """Tell the progress message's thread that the run was cut off (once per `marker`)."""


class WorkflowApprovals(Protocol):
    """Approvals of workflow steps (approvals.service.ApprovalService)."""

    async def get(self, approval_id: str) -> Approval | None: ...

    async def request(
        self,
        *,
        turn: Turn,
        caller: Caller,
        spec: ToolSpec,
        arguments: dict[str, Any],
        reason: str,
        tool_use_id: str,
        source: str = "agent",
        workflow_run_id: str = "",
        step_id: str = "",
    ) -> Approval: ...


LOST = (
    "Stopped: it was cut off mid-way (its worker was lost or failed). The steps shown as done are done; "
    "nothing more will run. Run `/oncall run {workflow}` again if it is still needed."
)
UNCONFIRMED = (
    "Stopped: Redis could not confirm that a replica recorded this step's start, so nothing more ran. "
    "Run `/oncall run {workflow}` again if it is still needed."
)
_AUDIT_OUTCOME: dict[str, Outcome] = {"succeeded": "succeeded", "rejected": "rejected", "expired": "expired"}


@dataclass(frozen=True)
class WorkflowFlow:
    runs: WorkflowRunStore
    catalog: WorkflowCatalog
    output: WorkflowOutput
    tools: Sessions
    approvals: WorkflowApprovals
    identities: TokenBroker  # binds the run's person (approvals.bindings) and their token to each step
    linking: LinkOffers
    registry: SharedSnapshot
    audit: Audit
    lease_seconds: float

    async def execute(self, run_id: str, *, approval_id: str | None = None) -> str:
        runs = self.runs
        run = await runs.get(run_id)
        if run is None:
            return "missing"
        token = approval_id or "start"
        # Claimed and held while the steps run: if this worker dies, the sweep finds the lease lapsed (`lost`)
        # and ends the run.
        try:
            if not await runs.start(run_id, token, self.lease_seconds):
                return "duplicate"
        except NotReplicated as exc:
            log.warning("workflow run %s (%s): %s; ended", run_id, token, exc)
            return await self._unconfirmed(run, token)
        async with held_lease(runs, run_id, token, self.lease_seconds):
            return await self._execute(run, approval_id)

    async def _unconfirmed(self, run: WorkflowRun, token: str) -> str:
        """No replica confirmed the claim: a failover could lose it and run these steps again (a resume
        could ask to approve the same step twice), so none runs; the run ends and its channel is told."""
        message = UNCONFIRMED.format(workflow=run.workflow)
        if run.message_ts is not None:
            await self.output.stopped(run, message, marker=f"{run.id}:{token}:unconfirmed")
        await self._end(run, self.catalog.current().get(run.workflow), "failed", message)
        await self.runs.release(run.id, token)
        return "claim not replicated"

    async def lost(self, now: float) -> int:
        """Runs whose worker died mid-run (their lease lapsed): each ends as failed and its channel is told
        where it stopped. None is run again on its own: a step may have done something an operator must
        look at first, so starting it again is theirs to decide. Returns how many were ended."""
        runs, ended = self.runs, 0
        for run_id, token in await runs.lapsed(now):
            run = await runs.get(run_id)
            if run is not None and run.status == "running":
                message = LOST.format(workflow=run.workflow)
                if run.message_ts is not None:
                    await self.output.stopped(run, message, marker=f"{run.id}:lost")
                await self._end(run, self.catalog.current().get(run.workflow), "failed", message)
                ended += 1
            await runs.release(run_id, token)  # only after acting on it: a sweep that dies leaves it
        return ended

    async def _execute(self, run: WorkflowRun, approval_id: str | None) -> str:
        workflow = self.catalog.current().get(run.workflow)
        if workflow is None:
            return await self._end(run, None, "failed", f"Workflow `{run.workflow}` no longer exists.")
        try:
            identity = await bound_identity(self.identities, run.team, run.user, run.sub, role="starter")
        except Unbound as exc:
            if exc.ended:
                await self.output.connect(run, await self.linking.offer(run.team, run.user))
            return await self._end(run, workflow, "failed", f"Not run: {exc}.")
        progress = self.output.progress(run, workflow)
        state = RunState.from_json(run.state) if run.state else None
        if run.message_ts is None:
            run.message_ts = await progress.post()
        if state is not None:
            progress.restore(state.log)
        run.status = "running"
        await self.runs.save(run)
        caller = Caller(run.team, run.user, run.channel, identity, service=workflow.identity == "service")
        outcome, declined = await self._decision(approval_id) if approval_id else (None, None)
        before = len(state.log) if state else 0
        async with self.tools.session(caller) as session:
            try:
                tools = await session.tools()
            except RegistryUnavailable as exc:
                return await self._end(run, workflow, "failed", str(exc), progress=progress)
            result = await run_workflow(
                workflow,
                run.params,
                tools=BoundTools(session, self.identities, run.sub),
                progress=progress,
                state=state,
                approved_outcome=outcome,
                declined=declined,
                withheld=withheld_steps(workflow, tools, session.withheld),
            )
            await self._audit_steps(run, identity, result.state.log[before:])
            if isinstance(result, WorkflowPaused):
                return await self._pause(run, caller, session, result, progress)
        run.state = result.state.to_json()
        if isinstance(result, WorkflowDone):
            summary = f"Done: {len(result.state.log)} step(s)."
            return await self._end(run, workflow, "succeeded", summary, progress=progress)
        assert isinstance(result, WorkflowFailed)
        status = result.kind if result.kind in ("rejected", "expired") else "failed"
        return await self._end(run, workflow, status, result.message, progress=progress)

    async def _pause(
        self,
        run: WorkflowRun,
        caller: Caller,
        session: GatewaySession,
        result: WorkflowPaused,
        progress: RunProgress,
    ) -> str:
        """A sensitive step: the run waits, saved, while people decide on its approval request."""
        spec = session.spec(result.tool.model_name)
        assert spec is not None
        run.state = result.state.to_json()
        run.status = "waiting_approval"
        await self.runs.save(run)
        ts = run.message_ts or ""
        turn = Turn(
            run.id,
            run.team,
            run.channel,
            "channel",
            run.user,
            run.workflow,
            ts,
            ts,
            run.created_at,
            "workflow",
        )
        approval = await self.approvals.request(
            turn=turn,
            caller=caller,
            spec=spec,
            arguments=result.rendered_args,
            reason=result.reason,
            tool_use_id=result.step.id,
            source="workflow",
            workflow_run_id=run.id,
            step_id=result.step.id,
        )
        run.approvals.append(approval.id)
        await self.runs.save(run)
        await progress.waiting(result.step.id, result.step.call)
        return "waiting for approval"

    async def _decision(self, approval_id: str) -> tuple[tuple[bool, str, Any] | None, Declined | None]:
        approval = await self.approvals.get(approval_id)
        if approval is None:
            return None, ("expired", "the approval record is gone")
        if approval.status == Status.SUCCEEDED:
            return (True, approval.outcome_detail, None), None
        if approval.status in (Status.FAILED, Status.OUTCOME_UNKNOWN):
            return (False, f"{approval.status.value.lower()}: {approval.outcome_detail}", None), None
        by = ", ".join(f"<@{u}>" for u in approval.decided_by)
        if approval.status == Status.REJECTED:
            return None, ("rejected", f"rejected by {by}: {approval.reject_reason}")
        if approval.status == Status.WITHDRAWN:  # the run stops as a rejected step does, saying why
            return None, ("rejected", f"withdrawn by the requester ({by}) before a decision")
        return None, ("expired", "")

    async def _end(
        self,
        run: WorkflowRun,
        workflow: Workflow | None,
        status: str,
        message: str,
        *,
        progress: RunProgress | None = None,
    ) -> str:
        run.status, run.summary, run.finished_at = status, message, time.time()
        await self.runs.save(run)
        if progress is not None:
            await progress.ended(status, message)
        elif run.message_ts is None:
            await self.output.ended(run, status, message)
        minutes = workflow.minutes_saved if (workflow is not None and status == "succeeded") else 0.0
        outcome = _AUDIT_OUTCOME.get(status, "failed")
        await self.audit.record(
            run_record(
                run,
                "workflow_run",
                outcome,
                tool=run.workflow,
                arguments=run.params,
                minutes=minutes,
                detail=message[:300],
            )
        )
        return status

    async def _audit_steps(self, run: WorkflowRun, identity: Identity, records: list[StepRecord]) -> None:
        view = await self.registry.view()
        for record in records:
            if record.status not in ("ok", "failed") or record.approved:
                continue  # skipped steps did nothing; approved ones are audited by the approval flow
            short, _, tool = record.call.partition(".")
            entry = view.server(short)
            minutes = view.minutes_saved(entry, tool) if entry is not None and record.status == "ok" else 0.0
            await self.audit.record(
                run_record(
                    run,
                    "tool_call",
                    "succeeded" if record.status == "ok" else "failed",
                    tool=tool,
                    arguments=record.arguments or {},
                    sub=identity.sub,
                    server=entry.name if entry else short,
                    latency_ms=record.latency_ms,
                    minutes=minutes,
                )
            )
