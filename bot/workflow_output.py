"""A workflow run in Slack (flows.workflow.WorkflowOutput): its progress message, the Connect prompt, and
what its starter is told, in Slack's words."""

from __future__ import annotations

import logging
from typing import Any

from agent.workflow import Workflow
from approvals.workflow_runs import WorkflowRun
from bot.blocks import feedback_actions
from bot.poster import Poster, PostError
from bot.slack_text import Mrkdwn, code, join, link, ours, trusted
from bot.workflow_progress import WorkflowProgress, end_icon

__all__ = ["SlackWorkflowOutput", "result_blocks", "status_text"]

JSON = dict[str, Any]

log = logging.getLogger(__name__)


class SlackWorkflowOutput:
    def __init__(self, poster: Poster) -> None:
        self._poster = poster

    def progress(self, run: WorkflowRun, workflow: Workflow) -> WorkflowProgress:
        return WorkflowProgress(self._poster, run, workflow)

    async def connect(self, run: WorkflowRun, url: str) -> None:
        text = ours("Connect your account first: {connect}, then run it again.", connect=link(url, "Connect"))
        await self._tell(run, text)

    async def ended(self, run: WorkflowRun, status: str, message: str) -> None:
        text = ours(
            "{icon} {name} (run {run}): {message}",
            icon=end_icon(status),
            name=code(run.workflow),
            run=code(run.id),
            message=message,
        )
        await self._tell(run, text, blocks=result_blocks(run, text))

    async def stopped(self, run: WorkflowRun, message: str, *, marker: str) -> None:
        text = ours(":x: {message}", message=message)
        try:
            await self._poster.post(
                run.channel,
                text=text,
                blocks=result_blocks(run, text),
                thread_ts=run.message_ts,
                marker=marker,
            )
        except PostError as exc:
            log.warning("could not tell run %s's thread that it stopped: %s", run.id, exc.error)

    async def _tell(self, run: WorkflowRun, text: Mrkdwn, *, blocks: list[JSON] | None = None) -> None:
        try:
            await self._poster.ephemeral(
                run.channel, run.user, text=text, blocks=blocks, thread_ts=run.thread_ts
            )
        except PostError as exc:
            log.info("could not tell %s: %s", run.user, exc.error)


def result_blocks(run: WorkflowRun, text: Mrkdwn) -> list[JSON]:
    """How a run ended, as a message: the (safe) text and, as on every workflow result, feedback buttons."""
    section = {"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}
    return [section, feedback_actions(run.id, subject="result")]


def status_text(runs: list[WorkflowRun], run_id: str | None) -> Mrkdwn:
    """`/oncall status [id]`: the runs the asker may see (none for an id: the same words whether it
    exists or not)."""
    if not runs:
        if run_id is None:
            return trusted("You have not run any workflows recently.")
        return ours("No such run: {id}.", id=code(run_id))
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
