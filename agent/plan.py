"""The plan the model states for an investigation of several steps: a local tool, `share_plan`.

The model calls it in the same step as its first tool calls (so it costs no extra round trip) and again as
steps complete; the loop answers it here, the way it answers `find_tools`: never an MCP call, never
audited as a server call, never waiting for approval, never counted as time saved. People see the plan in
the working message (bot.plan_display); the model reads back only `SHOWN`, or why its input was refused.

A plan is the model's words, so it is untrusted like the rest of them: the Slack edge escapes it and
redacts secrets before showing it. The limits keep it a glanceable list, not a second answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

__all__ = [
    "MAX_STEPS",
    "MAX_TITLE",
    "PLAN_TOOL",
    "PLAN_TOOL_NAME",
    "SHOWN",
    "Plan",
    "PlanStep",
    "StepStatus",
    "last_stated",
    "read_plan",
]

StepStatus = Literal["pending", "in_progress", "complete"]
PLAN_TOOL_NAME = "share_plan"  # MCP tools are named `<short>__<tool>` or end in a hash: never this
MAX_TITLE = 80
MAX_STEPS = 10
SHOWN = "Plan shown."
_STATUSES: tuple[StepStatus, ...] = ("pending", "in_progress", "complete")
PLAN_TOOL: dict[str, Any] = {
    "name": PLAN_TOOL_NAME,
    "description": (
        "Show the person your plan for an investigation of several steps, as a short checklist beside "
        "your answer. Call it in the same step as your first tool calls, and again with the whole plan "
        "whenever a step's status changes. It does nothing else and returns at once."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": MAX_TITLE, "description": "what the plan is for"},
            "steps": {
                "type": "array",
                "maxItems": MAX_STEPS,
                "items": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "maxLength": MAX_TITLE},
                        "status": {"type": "string", "enum": list(_STATUSES)},
                    },
                    "required": ["title", "status"],
                },
            },
        },
        "required": ["title", "steps"],
    },
}


@dataclass(frozen=True)
class PlanStep:
    title: str
    status: StepStatus


@dataclass(frozen=True)
class Plan:
    title: str
    steps: tuple[PlanStep, ...]


def _title(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    flat = " ".join(value.split())
    if len(flat) > MAX_TITLE:
        raise ValueError(f"{what} must be at most {MAX_TITLE} characters (it has {len(flat)})")
    return flat


def _step(index: int, value: Any) -> PlanStep:
    if not isinstance(value, Mapping):
        raise ValueError(f"step {index} must be an object with `title` and `status`")
    status = value.get("status")
    if status not in _STATUSES:
        raise ValueError(f"step {index}'s `status` must be one of {', '.join(_STATUSES)}")
    return PlanStep(_title(value.get("title"), f"step {index}'s `title`"), cast(StepStatus, status))


def read_plan(arguments: Any) -> Plan | str:
    """The plan in a `share_plan` call's input, or what is wrong with it (the tool error the model reads)."""
    try:
        if not isinstance(arguments, Mapping):
            raise ValueError("the input must be an object with `title` and `steps`")
        steps = arguments.get("steps")
        if not isinstance(steps, list):
            raise ValueError("`steps` must be a list of {title, status} objects")
        if not 1 <= len(steps) <= MAX_STEPS:
            raise ValueError(f"`steps` must hold 1 to {MAX_STEPS} steps (it has {len(steps)})")
        title = _title(arguments.get("title"), "`title`")
        return Plan(title, tuple(_step(i, s) for i, s in enumerate(steps, 1)))
    except ValueError as exc:
        return f"Plan not shown: {exc}. Call {PLAN_TOOL_NAME} again with a corrected plan, or go on without."


def last_stated(messages: Sequence[Mapping[str, Any]]) -> Plan | None:
    """The plan the model last stated since the newest question in `messages`: what a turn resumed after an
    approval (agent.deferred) shows again, so its new message does not lose the plan the first one had. A
    new question in the thread has none yet: plans from earlier turns are not carried over."""
    found: Plan | None = None
    for message in messages:
        content = message.get("content")
        blocks = [b for b in content if isinstance(b, Mapping)] if isinstance(content, list) else []
        if message.get("role") == "user" and not any(b.get("type") == "tool_result" for b in blocks):
            found = None  # a question (or a note to the model): what came before it was another turn's
        for block in blocks if message.get("role") == "assistant" else []:
            if block.get("type") == "tool_use" and block.get("name") == PLAN_TOOL_NAME:
                plan = read_plan(block.get("input"))
                found = plan if isinstance(plan, Plan) else found
    return found
