"""Servers the person has yet to connect, in a turn (SPEC §5 "Servers with their own authorization server").

A person who has not connected an `auth: oauth` server they may use is not sent to it: the gateway leaves
its tools out and names it in `connect_needed`. The model is offered one tool per such server instead,
`connect__<short>` ("this person has not connected <short> yet"): the model asks for it when the question
needs that server, and only then is the person shown a "Connect <server>" button. A call that failed for
want of the person's token (their connection ended, or the server wants more scope: a step-up) asks the
same way. Once they connect, the request runs again (`CONNECTED_ATTEMPT`) and is answered with the
server's tools, as a request answered after linking is.

The connect tool sends nothing anywhere: it only notes which servers to offer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.ports import ToolInfo, ToolResult, Tools
from mcp_clients.gateway import GatewaySession, ToolOutcome
from mcp_clients.server_oauth_errors import ConnectNeeded

__all__ = ["CONNECTED_ATTEMPT", "ConnectTool", "ConnectingTools", "connected_note"]

CONNECTED_ATTEMPT = "connected-"  # the attempts that answer a request again once a server is connected
PREFIX = "connect__"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")
ASKED = (
    "{person} has not connected {short} yet, so its tools are not available. A Connect {short} button has "
    "been shown to them; once they connect, this question is answered again with {short}'s tools. Tell "
    "them so in one short sentence, answer whatever you can without {short}, and stop."
)


@dataclass(frozen=True)
class ConnectTool:
    """`agent.ports.ToolInfo` of the tool that asks the person to connect one server."""

    model_name: str
    server: str
    short_name: str
    step_up: bool
    tool: str = "connect"
    needs_approval: bool = False
    fingerprint: str = "connect"
    input_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    @property
    def description(self) -> str:
        what = "grant more access to" if self.step_up else "connect their own account at"
        return (
            f"The person asking has yet to {what} {self.short_name}, a server they may use. Call this "
            f"when answering needs {self.short_name}'s tools: they are shown a Connect button, and the "
            "question is answered again once they have connected."
        )


def connected_note(asker: str) -> str:
    """What the model reads when a request runs again after its person connected a server."""
    return (
        f"{asker} has connected the server you asked for. Its tools are available now: answer the question."
    )


class ConnectingTools:
    """The turn's `agent.ports.Tools`: `inner` (the audited gateway session) plus one connect tool per server
    the person has yet to connect. `requested` names the servers to offer when the loop ends."""

    def __init__(self, inner: Tools, session: GatewaySession, person: str) -> None:
        self._inner = inner
        self._session = session
        self._person = person
        self._offered: dict[str, ConnectTool] = {}
        self.requested: dict[str, ConnectNeeded] = {}  # server -> why, in the order asked

    async def tools(self) -> Sequence[ToolInfo]:
        listed = list(await self._inner.tools())
        taken = {t.model_name for t in listed}
        for server, needed in self._session.connect_needed.items():
            name = (PREFIX + _UNSAFE.sub("_", needed.short_name))[:64]
            if name in taken:  # a real tool of that name: the real one keeps it
                continue
            tool = ConnectTool(name, server, needed.short_name, needed.step_up)
            self._offered[name] = tool
            listed.append(tool)
        return listed

    async def call(self, model_name: str, arguments: Mapping[str, Any]) -> ToolResult:
        tool = self._offered.get(model_name)
        if tool is not None:
            needed = self._session.connect_needed.get(tool.server)
            self.requested[tool.server] = needed or ConnectNeeded(tool.server, tool.short_name)
            return ToolOutcome(True, ASKED.format(person=self._person, short=tool.short_name))
        outcome = await self._inner.call(model_name, arguments)
        spec = self._session.spec(model_name)
        if outcome.error_kind == "connect" and spec is not None:
            needed = self._session.connect_needed.get(spec.server)
            if needed is not None:  # the connection ended or needs more scope: connect again
                self.requested[spec.server] = needed
        return outcome
