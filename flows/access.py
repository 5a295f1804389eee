"""What a requester may use: who they are (their linked identity), the Connect link when they have none,
the "Connect <server>" link for a server with its own authorization server they have yet to connect, and
the gateway session that lists and calls their tools with their own tokens."""

from __future__ import annotations

from dataclasses import dataclass

from flows.ports import Identities, LinkOffers, ServerOffers, Sessions
from mcp_clients.gateway import Caller, GatewaySession
from mcp_clients.questions import Attention
from mcp_clients.tokens import Identity

__all__ = ["ToolAccess"]


@dataclass(frozen=True)
class ToolAccess:
    identities: Identities
    links: LinkOffers
    gateway: Sessions
    servers: ServerOffers

    async def server_offer(self, team: str, user: str, server: str, *, waiting: str) -> str:
        """`waiting`: the request answered again once connected ("" for none)."""
        return await self.servers.offer(team, user, server, waiting=waiting or None)

    async def identity(self, team: str, user: str) -> Identity | None:
        return await self.identities.identity(team, user)

    async def link_offer(self, team: str, user: str, *, waiting: str) -> str:
        return await self.links.offer(team, user, waiting=waiting)

    def session(self, caller: Caller, attention: Attention | None = None) -> GatewaySession:
        return self.gateway.session(caller, attention)
