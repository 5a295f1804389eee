"""What a new assistant thread offers a person (SPEC §7 "Asking"): prompts built from the servers the
registry lets them use there and the workflows they may run, at most four (Slack's limit); a person
whose account is not linked gets the Connect offer instead, since nothing would run for them yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain, zip_longest
from typing import Protocol

from flows.workflow_requests import WorkflowRequests
from mcp_clients.tokens import Identity
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot
from registry_cache.view import Person

__all__ = ["MAX_PROMPTS", "AssistantPrompts", "Prompt", "Unlinked"]

MAX_PROMPTS = 4  # Slack shows at most four suggested prompts


@dataclass(frozen=True)
class Prompt:
    kind: str  # server | workflow
    name: str  # the server's short name or the workflow's name
    title: str  # the server's title or the workflow's description (untrusted: the registry's words)


@dataclass(frozen=True)
class Unlinked:
    connect_url: str


class _Identities(Protocol):
    async def identity(self, team: str, user: str) -> Identity | None: ...


class _Offers(Protocol):
    async def offer(self, team: str, user: str, *, waiting: str | None = None) -> str: ...


@dataclass(frozen=True)
class AssistantPrompts:
    identities: _Identities
    linking: _Offers
    registry: SharedSnapshot
    workflows: WorkflowRequests

    async def for_person(self, team: str, user: str, channel: str) -> list[Prompt] | Unlinked:
        identity = await self.identities.identity(team, user)
        if identity is None:
            return Unlinked(await self.linking.offer(team, user))
        servers = await self._servers(identity, channel)
        runnable = [
            Prompt("workflow", w.name, w.description) for w in await self.workflows.visible(identity, channel)
        ]
        # Alternate so that both kinds are offered when there are more than four in all.
        mixed = [p for p in chain.from_iterable(zip_longest(servers, runnable)) if p is not None]
        return mixed[:MAX_PROMPTS]

    async def _servers(self, identity: Identity, channel: str) -> list[Prompt]:
        try:
            view = await self.registry.view()
        except RegistryUnavailable:
            return []
        person = Person(identity.sub, identity.email, identity.groups)
        return [
            Prompt("server", e.short_name, e.title or e.short_name)
            for e in view.entries
            if e.usable and view.access(person, e, channel).allowed
        ]
