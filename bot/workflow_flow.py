"""Canned on-call workflows in Slack (SPEC §7 slash command, §8): start, run, pause for approval, resume.

A run posts one progress message in the channel (or the thread it was started from) that updates as steps
finish; approval cards for its sensitive steps go in that message's thread. Steps run through the same
gateway as the agent: the registry permissions of the person who ran it, with that person's token, or the
bot's service identity for `identity: service` workflows. A sensitive step of a service workflow runs, once
approved, with the service identity too: the approval records (and seals) `identity=service` and its card
says so. Who may run or see what is decided in `bot.workflow_access`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from agent.workflow import Workflow
from agent.workflow_runner import (
    Declined,
    RunState,
    WorkflowDone,
    WorkflowFailed,
    WorkflowPaused,
    run_workflow,
)
from approvals.audit import Audit, AuditRecord, args_digest, preview
from approvals.bindings import BoundTools, Unbound, bound_identity
from approvals.leases import held_lease
from approvals.service import ApprovalService
from approvals.store import Status
from approvals.turns import Turn
from approvals.workflow_runs import WorkflowRun, WorkflowRunStore
from bot.linking import Linking
from bot.poster import Poster, PostError
from bot.queues import Queues
from bot.slack_text import Mrkdwn, code, join, link, ours, trusted
from bot.workflow_access import may_run, may_see_run, withheld_steps
from bot.workflow_catalog import WorkflowCatalog
from bot.workflow_progress import WorkflowProgress
from mcp_clients.gateway import Caller, Gateway
from mcp_clients.tokens import Identity, TokenBroker
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot
from registry_cache.view import Person

__all__ = ["WorkflowCatalog", "WorkflowFlow"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkflowFlow:
    runs: WorkflowRunStore
    identities: TokenBroker
    registry: SharedSnapshot
    slack: Poster
    linking: Linking
    tools: Gateway
    approvals: ApprovalService
    audit: Audit
    queues: Queues
    catalog: WorkflowCatalog
    lease_seconds: float

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
        self.queues.enqueue_workflow(run.id)
        return run

    # --- jobs ------------------------------------------------------------------------------------------

    async def execute(self, run_id: str, *, approval_id: str | None = None) -> str:
        runs = self.runs
        run = await runs.get(run_id)
        if run is None:
            return "missing"
        token = approval_id or "start"
        if not await runs.claim(run_id, token):
            return "duplicate"
        # Held while the steps run: if this worker dies, the sweep finds the lease lapsed (`lost`).
        seconds = self.lease_seconds
        await runs.hold(run_id, token, seconds)
        async with held_lease(runs, run_id, token, seconds):
            return await self._execute(run, approval_id)

    async def lost(self, now: float) -> int:
        """Runs whose worker died mid-run (their lease lapsed): each ends as failed and its channel is told
        where it stopped. None is run again on its own: a step may have done something an operator must
        look at first, so starting it again is theirs to decide. Returns how many were ended."""
        runs, ended = self.runs, 0
        for run_id, token in await runs.lapsed(now):
            run = await runs.get(run_id)
            if run is not None and run.status == "running":
                message = (
                    "Stopped: it was cut off mid-way (its worker was lost or failed). The steps shown as "
                    "done are done; "
                    f"nothing more will run. Run `/oncall run {run.workflow}` again if it is still needed."
                )
                if run.message_ts is not None:
                    try:
                        await self.slack.post(
                            run.channel,
                            text=ours(":x: {message}", message=message),
                            thread_ts=run.message_ts,
                            marker=f"{run.id}:lost",
                        )
                    except PostError as exc:
                        log.warning("could not tell run %s's thread that it stopped: %s", run.id, exc.error)
                await self._end(run, self.catalog.current().get(run.workflow), "failed", message)
                ended += 1
            await runs.release(run_id, token)  # only after acting on it: a sweep that dies leaves it
        return ended

    async def _execute(self, run: WorkflowRun, approval_id: str | None) -> str:
        runs = self.runs
        workflow = self.catalog.current().get(run.workflow)
        if workflow is None:
            return await self._end(run, None, "failed", f"Workflow `{run.workflow}` no longer exists.")
        try:
            identity = await bound_identity(self.identities, run.team, run.user, run.sub, role="starter")
        except Unbound as exc:
            if exc.ended:
                url = await self.linking.offer(run.team, run.user)
                await self._tell(
                    run,
                    ours(
                        "Connect your account first: {connect}, then run it again.",
                        connect=link(url, "Connect"),
                    ),
                )
            return await self._end(run, workflow, "failed", f"Not run: {exc}.")
        progress = WorkflowProgress(self.slack, run, workflow)
        state = RunState.from_json(run.state) if run.state else None
        if run.message_ts is None:
            text, blocks = progress.render()
            posted = await self.slack.post(
                run.channel, text=text, blocks=blocks, thread_ts=run.thread_ts, marker=f"{run.id}:progress"
            )
            run.message_ts = posted.ts
        if state is not None:
            progress.restore(state.log)
        run.status = "running"
        await runs.save(run)
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
                spec = session.spec(result.tool.model_name)
                assert spec is not None
                run.state = result.state.to_json()
                run.status = "waiting_approval"
                await runs.save(run)
                turn = Turn(
                    run.id,
                    run.team,
                    run.channel,
                    "channel",
                    run.user,
                    run.workflow,
                    run.message_ts,
                    run.message_ts,
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
                await runs.save(run)
                progress.lines[result.step.id] = (
                    "waiting",
                    ours("{call} waiting for approval (card in thread)", call=code(result.step.call)),
                )
                await progress.flush()
                return "waiting for approval"
        run.state = result.state.to_json()
        if isinstance(result, WorkflowDone):
            summary = f"Done: {len(result.state.log)} step(s)."
            return await self._end(run, workflow, "succeeded", summary, progress=progress)
        assert isinstance(result, WorkflowFailed)
        status = result.kind if result.kind in ("rejected", "expired") else "failed"
        return await self._end(run, workflow, status, result.message, progress=progress)

    async def _decision(self, approval_id: str) -> tuple[tuple[bool, str, Any] | None, Declined | None]:
        approval = await self.approvals.get(approval_id)
        if approval is None:
            return None, ("expired", "the approval record is gone")
        if approval.status == Status.SUCCEEDED:
            return (True, approval.outcome_detail, None), None
        if approval.status in (Status.FAILED, Status.OUTCOME_UNKNOWN):
            return (False, f"{approval.status.value.lower()}: {approval.outcome_detail}", None), None
        if approval.status == Status.REJECTED:
            by = ", ".join(f"<@{u}>" for u in approval.decided_by)
            return None, ("rejected", f"rejected by {by}: {approval.reject_reason}")
        return None, ("expired", "")

    async def _end(
        self,
        run: WorkflowRun,
        workflow: Workflow | None,
        status: str,
        message: str,
        *,
        progress: WorkflowProgress | None = None,
    ) -> str:
        run.status, run.summary, run.finished_at = status, message, time.time()
        await self.runs.save(run)
        icon = ":white_check_mark:" if status == "succeeded" else ":x:"
        if progress is not None:
            await progress.flush(ours("{icon} {message}", icon=icon, message=message))
        elif run.message_ts is None:
            await self._tell(
                run,
                ours(
                    "{icon} {name} (run {run}): {message}",
                    icon=icon,
                    name=code(run.workflow),
                    run=code(run.id),
                    message=message,
                ),
            )
        minutes = workflow.minutes_saved if (workflow is not None and status == "succeeded") else 0.0
        await self.audit.record(
            AuditRecord(
                kind="workflow_run",
                outcome="succeeded"
                if status == "succeeded"
                else "rejected"
                if status == "rejected"
                else "expired"
                if status == "expired"
                else "failed",
                workflow_run_id=run.id,
                team=run.team,
                channel=run.channel,
                user=run.user,
                tool=run.workflow,
                args_sha256=args_digest(run.params),
                args_preview=preview(run.params),
                minutes_saved=minutes,
                detail=message[:300],
                thread_ts=run.message_ts or "",
            )
        )
        return status

    async def _audit_steps(self, run: WorkflowRun, identity: Identity, records: list[Any]) -> None:
        view = await self.registry.view()
        for record in records:
            if record.status not in ("ok", "failed") or record.approved:
                continue  # skipped steps did nothing; approved ones are audited by the approval flow
            short, _, tool = record.call.partition(".")
            entry = view.server(short)
            minutes = view.minutes_saved(entry, tool) if entry is not None and record.status == "ok" else 0.0
            await self.audit.record(
                AuditRecord(
                    kind="tool_call",
                    outcome="succeeded" if record.status == "ok" else "failed",
                    workflow_run_id=run.id,
                    team=run.team,
                    channel=run.channel,
                    user=run.user,
                    sub=identity.sub,
                    server=entry.name if entry else short,
                    tool=tool,
                    args_sha256=args_digest(record.arguments or {}),
                    args_preview=preview(record.arguments or {}),
                    latency_ms=record.latency_ms,
                    minutes_saved=minutes,
                )
            )

    async def _tell(self, run: WorkflowRun, text: Mrkdwn) -> None:
        try:
            await self.slack.ephemeral(run.channel, run.user, text=text, thread_ts=run.thread_ts)
        except PostError as exc:
            log.info("could not tell %s: %s", run.user, exc.error)

    async def status_text(self, team: str, user: str, run_id: str | None) -> Mrkdwn:
        if run_id is None:
            runs = await self.runs.recent(team, user)
            if not runs:
                return trusted("You have not run any workflows recently.")
        else:
            run = await self.runs.get(run_id)
            if run is None or not await self._may_see(run, team, user):
                return ours("No such run: {id}.", id=code(run_id))  # the same words whether it exists or not
            runs = [run]
        lines = [
            ours(
                "{id} *{name}*: {status}{summary}",
                id=code(r.id),
                name=r.workflow,
                status=r.status,
                summary=" — " + r.summary[:200] if r.summary else "",
            )
            for r in runs
        ]
        return join(lines)

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

    def params_json(self, workflow: str, channel: str, thread_ts: str | None) -> str:
        return json.dumps({"w": workflow, "c": channel, "t": thread_ts})
