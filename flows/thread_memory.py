"""A thread's memory: what its stored conversation keeps, and what each person's turn is handed of it.

The stored conversation keeps what was said in full, for whoever may see it later. When a person's turn
runs, the output of every server this person may not use now (registry view, their identity, this channel)
is replaced by a short note naming the server (SPEC §7: thread memory respects permissions). What the
assistant answered stays: it was posted where everyone in the thread could read it. What only the asker may
see (a `private_data` server's output, the outcome of an approved call to one, and the answer built on
them) is withheld in the memory itself. A paused step is kept with placeholder results (agent.deferred),
so the thread stays a valid conversation while people decide.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Set
from typing import Any

from agent.deferred import park
from agent.loop import Paused, Result
from agent.transcript import withhold, withhold_results, withhold_servers
from approvals.turns import Turn
from mcp_clients.gateway import GatewaySession
from registry_cache.snapshot import RegistryUnavailable
from registry_cache.view import RegistryView

__all__ = ["handed_to", "registry_view", "remembered"]


async def registry_view(session: GatewaySession) -> RegistryView | None:
    with contextlib.suppress(RegistryUnavailable):
        return await session.view()
    return None


async def handed_to(
    session: GatewaySession, channel: str, history: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`history` as this session's person may be handed it in `channel` now."""
    return withhold_servers(history, await _may_see(session, channel), _withheld)


def remembered(
    turn: Turn,
    session: GatewaySession,
    result: Result,
    history: list[dict[str, Any]],
    asked_at: int,
    private_outcomes: Set[str] = frozenset(),
) -> list[dict[str, Any]]:
    """What the memory keeps after this turn: `history` as it was stored (not as this person was handed
    it), a paused step parked with placeholders, and what only the asker may see withheld: output of
    private servers from `asked_at` on, and the outcomes of the calls in `private_outcomes` (tool_use ids)."""
    messages = [*history, *result.messages[len(history) :]]
    private = {
        c.model_name for c in result.calls if (spec := session.spec(c.model_name)) and spec.private_data
    }
    if isinstance(result, Paused):
        messages = park(messages, result.completed, result.pending)
    if private or private_outcomes:
        # Answered to the asker alone: the memory must not hand it to anyone else in the thread.
        note = f"[withheld: private data, shown only to <@{turn.user}>]"
        messages = withhold_results(messages, set(private_outcomes), note)
        messages = withhold(messages, private, since=asked_at, note=note)
    return messages


async def _may_see(session: GatewaySession, channel: str) -> Callable[[str], bool]:
    """Whether this person may use a server here now. With no registry copy none can be shown to be
    allowed, so every server's output is withheld."""
    view, person = await registry_view(session), session.caller.person

    def may_see(server: str) -> bool:
        entry = view.server(server) if view is not None else None
        return view is not None and entry is not None and view.access(person, entry, channel).allowed

    return may_see


def _withheld(server: str) -> str:
    return f"[output of {server.split('/', 1)[-1]} withheld: you don't have access to this server]"
