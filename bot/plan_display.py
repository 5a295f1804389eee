"""The model's plan (agent.plan) as people see it: Slack's plan display in a stream, lines otherwise.

In a stream, a plan is a `plan_update` chunk (its title) and one `task_update` per step, with ids fixed by
the step's place ("plan-1", "plan-2", ...), so a restated plan updates the same tasks instead of adding
new ones. Only what changed since the last statement is sent: a restated plan usually moves one step.
A step a shorter restatement leaves out stays as it was last shown (Slack has no way to remove a task).

Where the working message is updated instead of streamed, the plan is lines above the tool calls:
"Plan: <title>", then ✓ done, ▸ under way, · still to do.

A plan is the model's words: every title goes through `untrusted` (secrets redacted, escaped), so a plan
can neither ping anyone nor carry a token into Slack.
"""

from __future__ import annotations

from typing import Any

from agent.plan import Plan
from bot.slack_text import Mrkdwn, trusted, untrusted

__all__ = ["PlanDisplay", "plan_lines"]

_MARK = {"complete": "✓", "in_progress": "▸", "pending": "·"}


def _safe(text: str) -> str:
    return str(untrusted(text, markdown=False))


class PlanDisplay:
    """What a stream has shown of the plan so far, and the chunks that bring it up to date."""

    def __init__(self) -> None:
        self._title: str | None = None
        self._steps: dict[str, tuple[str, str]] = {}  # task id -> (title, status) as last sent

    def chunks(self, plan: Plan) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        title = _safe(plan.title)
        if title != self._title:
            self._title = title
            out.append({"type": "plan_update", "title": title})
        for index, step in enumerate(plan.steps, 1):
            task_id, shown = f"plan-{index}", (_safe(step.title), step.status)
            if self._steps.get(task_id) != shown:
                self._steps[task_id] = shown
                out.append({"type": "task_update", "id": task_id, "title": shown[0], "status": shown[1]})
        return out


def plan_lines(plan: Plan | None) -> list[Mrkdwn]:
    """The plan as mrkdwn lines, none without a plan."""
    if plan is None:
        return []
    steps = [trusted(f"{_MARK[s.status]} {_safe(s.title)}") for s in plan.steps]
    return [trusted(f"*Plan:* {_safe(plan.title)}"), *steps]
