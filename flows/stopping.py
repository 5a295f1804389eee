"""A turn's Stop, as the loop's `Stop` port: a request recorded by any process (approvals.stops) is seen
at the loop's next safe point, and a pending model call is cancelled within `POLL_SECONDS`. And the servers
the turn is using, written down as each tool call starts, for `web` to judge who else may stop it
(flows.stop_rights)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError

from agent.ports import ToolInfo, ToolResult, Tools
from approvals.stops import TurnStops
from flows.cancels import raise_if_cancelled
from mcp_clients.gateway import GatewaySession

__all__ = ["ServersInUse", "StopWatch"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25  # one Redis read a quarter second per running turn while the model thinks


class StopWatch:
    def __init__(self, stops: TurnStops, turn_id: str, *, poll_seconds: float = POLL_SECONDS) -> None:
        self._stops = stops
        self._turn_id = turn_id
        self._poll = poll_seconds
        self.by: str | None = None  # the Slack user who stopped it

    async def check(self) -> str | None:
        raise_if_cancelled()  # a safe point: a cancel Python dropped mid-command ends the turn here
        if self.by is None:
            try:
                # Shielded: the loop cancels `wait` when the model answers first, and a Redis command cut
                # off mid-reply leaves its pooled connection unusable (seen: every later turn hung).
                self.by = await asyncio.shield(self._stops.who(self._turn_id))
            except RedisError:  # a Stop is a courtesy: a Redis hiccup must not end the turn
                log.warning("could not read the stop request of turn %s", self._turn_id)
        return f"<@{self.by}>" if self.by else None

    async def wait(self) -> str:
        while (who := await self.check()) is None:
            await asyncio.sleep(self._poll)
        return who


class ServersInUse:
    """The turn's `agent.ports.Tools`, noting each call's server (approvals.stops) before the call starts:
    from then on that server's approvers may stop the turn. Once per server and attempt."""

    def __init__(self, inner: Tools, session: GatewaySession, stops: TurnStops, turn_id: str) -> None:
        self._inner = inner
        self._session = session
        self._stops = stops
        self._turn_id = turn_id
        self._noted: set[str] = set()

    async def tools(self) -> Sequence[ToolInfo]:
        return await self._inner.tools()

    async def call(self, model_name: str, arguments: Mapping[str, Any]) -> ToolResult:
        spec = self._session.spec(model_name)
        if spec is not None and spec.server not in self._noted:
            try:
                await self._stops.using(self._turn_id, spec.server)
                self._noted.add(spec.server)
            except RedisError:  # the call matters more: only the asker can stop it until a later call
                log.warning("could not note turn %s's use of %s", self._turn_id, spec.server)
        return await self._inner.call(model_name, arguments)
