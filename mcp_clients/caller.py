"""Who a gateway session calls servers for: one person (or the bot itself) in one place."""

from __future__ import annotations

from dataclasses import dataclass

from mcp_clients.tokens import Identity
from registry_cache.view import Person

__all__ = ["Caller"]


@dataclass(frozen=True)
class Caller:
    team: str
    user: str
    channel: str | None
    identity: Identity
    service: bool = (
        False  # call every server with the bot's service identity (workflows with identity: service)
    )

    @property
    def person(self) -> Person:
        return Person(self.identity.sub, self.identity.email, self.identity.groups)
