"""Which steps of a workflow may not run at all (SPEC §6, §8).

- `withheld_steps`: steps that cannot run for this person whatever they pass: the tool was withheld from
  their session (a poisoned definition, or a call that needs an approval nobody may give), or the step adds
  `approval: required` to a tool that nobody may approve. The run fails before any step runs, saying why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.workflow import Workflow
from mcp_clients.gateway import ToolSpec
from registry_cache.view import NOBODY_MAY_APPROVE

__all__ = ["withheld_steps"]


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
