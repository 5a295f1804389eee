"""Who and where approved work is bound to, and why it may not run now (SPEC §5 "A person is their sub", §6
"Execution is bound").

- An approved action runs as the person who asked (the `sub` sealed into the approval), a workflow's steps
  as the person who started it, or not at all: the Slack account's *current* link must still be to that
  `sub`. Unlinked, or linked to another identity since, raises `Unbound`; nobody else's token is used instead.
- An approved action runs on the server it was approved for: the same registry name, URL and resource.

Errors: `Unbound` (its message is safe to show people; `ended` says whether connecting again would help).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from approvals.approval import Approval
from approvals.ports import Identities
from mcp_clients.gateway import GatewaySession, ToolOutcome, ToolSpec
from mcp_clients.tokens import Identity

__all__ = ["SERVER_CHANGED", "BoundTools", "Unbound", "bound_identity", "server_problem"]

SERVER_CHANGED = "the server changed since it was approved"
Role = Literal["requester", "starter"]
_ENDED = {
    "requester": "the requester's account link has ended",
    "starter": "the account link of the person who started it has ended",
}
_RELINKED = {
    "requester": "the requester's Slack account is now linked to another identity",
    "starter": "the Slack account that started it is now linked to another identity",
}


class Unbound(Exception):
    """The Slack account no longer stands for the person the work is bound to."""

    def __init__(self, message: str, *, ended: bool) -> None:
        super().__init__(message)
        self.ended = ended


async def bound_identity(broker: Identities, team: str, user: str, sub: str, *, role: Role) -> Identity:
    """`user`'s current identity, if it is still the person `sub`; otherwise raises `Unbound`."""
    if not sub:  # recorded before work was bound to a person: nothing says whom it may run as
        raise Unbound(f"it does not record which person the {role} is; ask again", ended=False)
    identity = await broker.identity(team, user)
    if identity is None:
        raise Unbound(_ENDED[role], ended=True)
    if not hmac.compare_digest(identity.sub.encode(), sub.encode()):
        raise Unbound(_RELINKED[role], ended=False)
    return identity


def server_problem(approval: Approval, spec: ToolSpec) -> str | None:
    """Why the live listing's `spec` is not the server `approval` was approved for (None: it is)."""
    approved = (approval.server, approval.server_url, approval.resource)
    return None if (spec.server, spec.url, spec.resource) == approved else SERVER_CHANGED


class BoundTools:
    """A workflow run's tools (agent.ports.Tools): each step is called only while the Slack account that
    started the run is still linked to the person who started it."""

    def __init__(self, session: GatewaySession, broker: Identities, sub: str) -> None:
        self._session = session
        self._broker = broker
        self._sub = sub

    async def tools(self) -> Sequence[ToolSpec]:
        return await self._session.tools()

    async def call(self, model_name: str, arguments: Mapping[str, Any]) -> ToolOutcome:
        caller = self._session.caller
        try:
            await bound_identity(self._broker, caller.team, caller.user, self._sub, role="starter")
        except Unbound as exc:
            return ToolOutcome(False, f"Not run: {exc}.", error_kind="refused")
        return await self._session.call(model_name, arguments)
