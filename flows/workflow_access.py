"""Who may run a workflow, which of its steps may not run at all, and who may see a run (SPEC §6, §7, §8).

- `may_run`: every step's server is open to this person in this channel and every step's tool is enabled
  (what `/oncall list` shows and `/oncall run` accepts).
- `withheld_steps`: steps that cannot run for this person whatever they pass: the tool was withheld from
  their session (a poisoned definition, or a call that needs an approval nobody may give), or the step adds
  `approval: required` to a tool that nobody may approve. The run fails before any step runs, saying why.
- `may_see_run`: `/oncall status <id>` shows a run to the person who started it, and to people of the same
  team who may run that workflow where it ran; to anyone else it does not exist (its id says nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.workflow import Workflow
from approvals.workflow_runs import WorkflowRun
from mcp_clients.gateway import ToolSpec
from mcp_clients.tokens import Identity
from registry_cache.view import NOBODY_MAY_APPROVE, Person, RegistryView

__all__ = ["may_run", "may_see_run", "withheld_steps"]


def may_run(view: RegistryView, person: Person, workflow: Workflow, channel: str | None) -> bool:
    for step in workflow.steps:
        entry = view.server(step.server_short)
        if (
            entry is None
            or not view.access(person, entry, channel).allowed
            or not view.tool_enabled(entry, step.tool)
        ):
            return False
    return True


def withheld_steps(
    workflow: Workflow, specs: Sequence[ToolSpec], withheld: Mapping[str, tuple[str, str, str]]
) -> dict[str, str]:
    """Step id -> why it may not run, for the steps of `workflow` that no approval or retry could run.

    `specs` and `withheld` come from the run's gateway session: what it offers, and what it withheld
    (model name -> server, tool, why)."""
    found: dict[str, str] = {}
    for step in workflow.steps:
        why = next(
            (
                reason
                for server, tool, reason in withheld.values()
                if server.rsplit("/", 1)[-1] == step.server_short and tool == step.tool
            ),
            None,
        )
        if why is None and step.approval_required:
            spec = next((s for s in specs if s.short_name == step.server_short and s.tool == step.tool), None)
            if spec is not None and not spec.approval.approver_groups:
                why = NOBODY_MAY_APPROVE
        if why is not None:
            found[step.id] = why
    return found


def may_see_run(
    run: WorkflowRun,
    team: str,
    user: str,
    *,
    identity: Identity | None,
    workflow: Workflow | None,
    view: RegistryView | None,
) -> bool:
    """Whether `user` of `team` may see `run`: its starter, or someone who may run its workflow where it ran.

    `identity` is the asker's link, `workflow` the run's workflow as it stands, `view` the registry: without
    any of them only the starter sees the run (fail closed)."""
    if run.team != team:
        return False
    if run.user == user:
        return True
    if identity is None or workflow is None or view is None:
        return False
    person = Person(identity.sub, identity.email, identity.groups)
    return may_run(view, person, workflow, run.channel)
