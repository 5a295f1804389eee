"""The model's plan as Slack shows it (bot.plan_display): chunks for a stream, lines otherwise."""

from __future__ import annotations

from slack_sdk.models.messages.chunk import Chunk

from agent.plan import Plan, PlanStep, StepStatus
from bot.blocks import progress_message
from bot.plan_display import PlanDisplay, plan_lines


def plan(*statuses: StepStatus, title: str = "Why slow") -> Plan:
    names = ("Queries", "DAGs", "Explain")
    return Plan(title, tuple(PlanStep(n, s) for n, s in zip(names, statuses, strict=False)))


def test_a_restated_plan_sends_only_what_changed_under_the_same_task_ids() -> None:
    shown = PlanDisplay()
    first = shown.chunks(plan("in_progress", "pending", "pending"))
    assert [(c["type"], c.get("id"), c.get("status")) for c in first] == [
        ("plan_update", None, None),
        ("task_update", "plan-1", "in_progress"),
        ("task_update", "plan-2", "pending"),
        ("task_update", "plan-3", "pending"),
    ]
    assert all(Chunk.parse(c) is not None for c in first)  # shapes slack_sdk builds
    assert shown.chunks(plan("in_progress", "pending", "pending")) == []
    moved = shown.chunks(plan("complete", "in_progress", "pending"))
    assert [(c["id"], c["status"]) for c in moved] == [("plan-1", "complete"), ("plan-2", "in_progress")]
    retitled = shown.chunks(plan("complete", "in_progress", "pending", title="Why slow, narrowed"))
    assert retitled == [{"type": "plan_update", "title": "Why slow, narrowed"}]


def test_plan_lines_mark_each_step_and_sit_above_the_tool_calls() -> None:
    lines = plan_lines(Plan("<!here> why", (PlanStep("a <@U1>", "complete"), PlanStep("b", "in_progress"))))
    assert lines == ["*Plan:* &lt;!here&gt; why", "✓ a &lt;@U1&gt;", "▸ b"]
    assert plan_lines(None) == []
    message = progress_message([], head=plan_lines(plan("pending")))
    assert message.blocks[0]["text"]["text"] == "*Plan:* Why slow\n· Queries"
