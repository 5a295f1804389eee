"""A workflow run's one progress message: a line per step, updated as steps finish (SPEC §8).

Step output and errors come from MCP servers, so every line is built with bot.slack_text: a step's result
cannot ping the channel, disguise a link or show a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.workflow import Workflow
from agent.workflow_runner import StepRecord
from approvals.workflow_runs import WorkflowRun
from bot.blocks import feedback_actions
from bot.poster import Poster, PostError
from bot.slack_text import Mrkdwn, code, join, ours, trusted

__all__ = ["WorkflowProgress", "end_icon", "step_line"]

log = logging.getLogger(__name__)

SUMMARY_CHARS = 150
_ICONS = {
    "running": ":hourglass_flowing_sand:",
    "ok": ":white_check_mark:",
    "failed": ":x:",
    "skipped": ":fast_forward:",
    "waiting": ":raising_hand:",
    "rejected": ":no_entry:",
    "expired": ":alarm_clock:",
}


def end_icon(status: str) -> str:
    return ":white_check_mark:" if status == "succeeded" else ":x:"


def step_line(call: str, summary: str) -> Mrkdwn:
    """A step's line: its call and the start of its output (untrusted)."""
    return ours("{call} {summary}", call=code(call), summary=summary[:SUMMARY_CHARS])


@dataclass
class WorkflowProgress:
    """The run's one message, updated as steps finish."""

    poster: Poster
    run: WorkflowRun
    workflow: Workflow
    lines: dict[str, tuple[str, Mrkdwn]] = field(default_factory=dict)  # step id -> (state, text)
    ended_as: str | None = None  # how the run ended, once it has: its result then takes feedback

    def restore(self, log_records: Iterable[StepRecord]) -> None:
        """The lines of the steps a resumed run has already done."""
        for record in log_records:
            state = record.status if record.status in _ICONS else "ok"
            self.lines[record.step_id] = (state, step_line(record.call, record.summary))

    async def step_started(self, step_id: str, call: str) -> None:
        self.lines[step_id] = ("running", code(call))
        await self.flush()

    async def step_finished(self, step_id: str, ok: bool, summary: str) -> None:
        call = next((s.call for s in self.workflow.steps if s.id == step_id), step_id)
        state = "skipped" if summary == "skipped" else "ok" if ok else "failed"
        self.lines[step_id] = (state, step_line(call, summary))
        await self.flush()

    async def post(self) -> str:
        """Put the message up (in the channel, or the thread the run was started from); its ts."""
        text, blocks = self.render()
        run = self.run
        posted = await self.poster.post(
            run.channel, text=text, blocks=blocks, thread_ts=run.thread_ts, marker=f"{run.id}:progress"
        )
        return posted.ts

    async def waiting(self, step_id: str, call: str) -> None:
        self.lines[step_id] = (
            "waiting",
            ours("{call} waiting for approval (card in thread)", call=code(call)),
        )
        await self.flush()

    async def ended(self, status: str, message: str) -> None:
        self.ended_as = status
        await self.flush(ours("{icon} {message}", icon=end_icon(status), message=message))

    def render(self, footer: Mrkdwn | None = None) -> tuple[Mrkdwn, list[dict[str, Any]]]:
        head = ours(
            "*{name}* (run {run}) started by <@{user}>",
            name=self.workflow.name,
            run=code(self.run.id),
            user=self.run.user,
        )
        body = [
            ours("{icon} *{step}* {text}", icon=_ICONS[state], step=sid, text=text)
            for sid, (state, text) in self.lines.items()
        ]
        text = join([head, *body, footer or trusted("")]).strip()
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}]
        if self.ended_as is not None:  # SPEC §7: every workflow result carries feedback buttons
            blocks.append(feedback_actions(self.run.id, subject="result"))
        return ours("{name}: {status}", name=self.workflow.name, status=self.run.status), blocks

    async def flush(self, footer: Mrkdwn | None = None) -> None:
        if not self.run.message_ts:
            return
        text, blocks = self.render(footer)
        try:
            await self.poster.update(self.run.channel, self.run.message_ts, text=text, blocks=blocks)
        except PostError as exc:
            log.info("progress update failed: %s", exc.error)
