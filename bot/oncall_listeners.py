"""`/oncall` and its modals and shortcut (SPEC §7): help, list, run (a modal for missing parameters), status.

The command is acknowledged at once with nothing; the answer goes to the person through `respond()`
(ephemeral), and a modal opens from the lazy listener within the trigger's 3-second window.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from agent.workflow import Workflow, coerce_params
from bot.identity import BotIdentity
from bot.oncall import (
    help_text,
    list_message,
    params_modal,
    parse_command,
    read_modal_values,
    submission_errors,
)
from bot.slack_text import Mrkdwn, code, defuse, join, link, ours, trusted, untrusted
from bot.workflow_output import status_text
from flows.linking import Linking
from flows.workflow_requests import WorkflowRequests
from mcp_clients.tokens import TokenBroker

__all__ = ["PICK_CALLBACK_ID", "SHORTCUT_CALLBACK_ID", "register_oncall"]

log = logging.getLogger(__name__)

PARAMS_CALLBACK_ID = "oncall_params"
SHORTCUT_CALLBACK_ID = "oncall_run"
PICK_CALLBACK_ID = "oncall_pick"


async def _ack(ack: AsyncAck) -> None:
    await ack()


async def _reply(respond: AsyncRespond, text: Mrkdwn, blocks: list[dict[str, Any]] | None = None) -> None:
    """A reply through the command's response_url, held to what the poster holds every message to."""
    payload = defuse({"text": untrusted(text), "blocks": blocks})
    await respond(**{key: value for key, value in payload.items() if value is not None})


def _params_json(workflow: str, channel: str, thread_ts: str | None) -> str:
    """The parameters modal's private_metadata: which workflow, where it was asked for."""
    return json.dumps({"w": workflow, "c": channel, "t": thread_ts})


def register_oncall(
    app: AsyncApp, flow: WorkflowRequests, broker: TokenBroker, linking: Linking, bot: BotIdentity
) -> None:
    listeners = _Oncall(flow, broker, linking, bot)
    app.command(re.compile(r"^/"))(ack=_ack, lazy=[listeners.command])
    app.view(PARAMS_CALLBACK_ID)(ack=listeners.check_params, lazy=[listeners.submit_params])
    app.shortcut(SHORTCUT_CALLBACK_ID)(ack=_ack, lazy=[listeners.shortcut])
    app.view(PICK_CALLBACK_ID)(listeners.picked)


@dataclass(frozen=True)
class _Oncall:
    flow: WorkflowRequests
    broker: TokenBroker
    linking: Linking
    bot: BotIdentity

    async def command(self, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        parsed = parse_command(str(body.get("text") or ""))
        team, user, channel = str(body["team_id"]), str(body["user_id"]), str(body["channel_id"])
        name = str(body.get("command") or "/oncall")
        if parsed.kind == "help":
            await _reply(respond, help_text(name))
            return
        if parsed.kind == "error":
            await _reply(respond, trusted(parsed.message))  # bot.oncall escapes what people typed
            return
        if parsed.kind == "status":
            await _reply(
                respond, status_text(await self.flow.seen_by(team, user, parsed.run_id), parsed.run_id)
            )
            return
        identity = await self.broker.identity(team, user)
        if identity is None:
            url = await self.linking.offer(team, user)
            connect = link(url, "Connect your account")
            await _reply(
                respond, ours("Connect your account first: {connect}. Then try again.", connect=connect)
            )
            return
        visible = {w.name: w for w in await self.flow.visible(identity, channel)}
        if parsed.kind == "list":
            message = list_message(list(visible.values()), name)
            await _reply(respond, message.text, message.blocks)
            return
        workflow = visible.get(parsed.workflow or "")
        if workflow is None:
            known = join([code(w) for w in sorted(visible)], ", ") or trusted("none")
            await _reply(
                respond,
                ours(
                    "There is no workflow {name} you may run here. Yours: {known}.",
                    name=code(parsed.workflow or ""),
                    known=known,
                ),
            )
            return
        params, errors = coerce_params(workflow, parsed.params)
        if errors:
            view = params_modal(
                workflow,
                given=parsed.params,
                errors=errors,
                private_metadata=_params_json(workflow.name, channel, None),
            )
            await client.views_open(trigger_id=body["trigger_id"], view=view)
            return
        run = await self.flow.start(team=team, channel=channel, user=user, workflow=workflow, params=params)
        started = ours(
            "Starting {name} (run {run}); progress will appear in this channel.",
            name=code(workflow.name),
            run=code(run.id),
        )
        await _reply(respond, started)

    async def check_params(self, ack: AsyncAck, view: dict[str, Any]) -> None:
        meta = json.loads(view.get("private_metadata") or "{}")
        workflow = self.flow.catalog.current().get(str(meta.get("w")))
        if workflow is None:
            await ack(response_action="errors", errors={})
            return
        _, errors = coerce_params(workflow, read_modal_values(view["state"]["values"]))
        if errors:
            await ack(**submission_errors(workflow, errors))
            return
        await ack()

    async def submit_params(self, body: dict[str, Any], view: dict[str, Any]) -> None:
        meta = json.loads(view.get("private_metadata") or "{}")
        user, team = str(body["user"]["id"]), str(body.get("team", {}).get("id") or self.bot.team)
        workflow = self.flow.catalog.current().get(str(meta.get("w")))
        identity = await self.broker.identity(team, user)
        if workflow is None or identity is None:
            return
        channel = str(meta.get("c"))
        if workflow.name not in {w.name for w in await self.flow.visible(identity, channel)}:
            return  # the modal carries only a name; permission is decided again here
        params, errors = coerce_params(workflow, read_modal_values(view["state"]["values"]))
        if not errors:
            await self.flow.start(team=team, channel=channel, user=user, workflow=workflow, params=params,
                             thread_ts=meta.get("t"))  # fmt: skip

    async def shortcut(self, body: dict[str, Any], client: AsyncWebClient) -> None:
        # Slash commands do not work in threads; the message shortcut offers the same there.
        user, team = str(body["user"]["id"]), str(body.get("team", {}).get("id") or self.bot.team)
        channel = str(body.get("channel", {}).get("id") or "")
        message = body.get("message") or {}
        thread_ts = message.get("thread_ts") or message.get("ts")
        identity = await self.broker.identity(team, user)
        workflows = await self.flow.visible(identity, channel) if identity else []
        view = pick_modal(workflows, channel, thread_ts)
        await client.views_open(trigger_id=body["trigger_id"], view=view)

    async def picked(self, ack: AsyncAck, view: dict[str, Any]) -> None:
        meta = json.loads(view.get("private_metadata") or "{}")
        values = view["state"]["values"]
        name = str(
            (values.get("workflow", {}).get("value", {}).get("selected_option") or {}).get("value", "")
        )
        workflow = self.flow.catalog.current().get(name)
        if workflow is None:
            await ack(response_action="errors", errors={"workflow": "Pick a workflow."})
            return
        modal = params_modal(
            workflow,
            given={},
            errors={},
            private_metadata=_params_json(workflow.name, str(meta.get("c")), meta.get("t")),
        )
        await ack(response_action="update", view=modal)


def pick_modal(workflows: list[Workflow], channel: str, thread_ts: str | None) -> dict[str, Any]:
    """The message shortcut's modal: pick one of the workflows this person may run here."""
    options = [{"text": {"type": "plain_text", "text": w.name[:75]}, "value": w.name} for w in workflows][
        :100
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "No workflows are available to you here (connect your account if you have not).",
            },
        }
    ]
    if options:
        blocks = [
            {
                "type": "input",
                "block_id": "workflow",
                "label": {"type": "plain_text", "text": "Workflow"},
                "element": {"type": "static_select", "action_id": "value", "options": options},
            }
        ]
    view = {
        "type": "modal",
        "callback_id": PICK_CALLBACK_ID,
        "title": {"type": "plain_text", "text": "Run a workflow"},
        "private_metadata": json.dumps({"c": channel, "t": thread_ts}),
        "blocks": blocks,
    }
    if options:
        view["submit"] = {"type": "plain_text", "text": "Next"}
    return view
