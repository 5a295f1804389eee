"""Who may stop a running turn (issue 19 item 3, SPEC §7 "While working"): its asker, and anyone the registry
lets approve on the servers the turn is using.

- The asker is a person, their `sub` (SPEC §5): a click from any Slack account linked to it is theirs.
- An approver is a linked person whose current groups (no older than 5 minutes, as at an approval click)
  meet an approval rule, the server's own or a tool's, of a server the turn has called a tool on so far
  (flows.stopping.ServersInUse notes each as its first call starts). Before the first call: the asker only.
- A Stop that is recorded, and a refused click, go to the audit (`turn_stop`, `stopped` or `denied`) under
  the clicker's Slack account and `sub`. A refused click changes nothing else.

Errors: redis.exceptions.RedisError propagates (the clicker is told nothing changed). A person whose groups
cannot be re-read, or a registry that cannot be read, is refused: the rule fails closed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from approvals.audit import turn_record
from approvals.ports import AuditLog
from approvals.stops import TurnStops
from approvals.turns import Turn, TurnStore
from flows.ports import CurrentIdentities
from mcp_clients.tokens import TokenUnavailable
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot

__all__ = ["StopClick", "StopRights"]

log = logging.getLogger(__name__)

_RUNNING = frozenset({"running", "queued", ""})


@dataclass(frozen=True)
class StopClick:
    """What a Stop click came to: `stopping` (recorded; the turn ends at its next safe point), `already`
    (someone else stopped it first), `finished`, or `refused`. `servers`: the short names of the servers in
    use, whose approvers may stop the turn besides its asker. `linked`: whether the clicker has a linked
    account (an unlinked approver is refused until they link: their groups cannot be known)."""

    verdict: Literal["stopping", "already", "finished", "refused"]
    servers: tuple[str, ...] = ()
    linked: bool = True

    @property
    def wants_link(self) -> bool:
        """Refused only for want of a linked account: linked, they might be an approver of a server in use."""
        return self.verdict == "refused" and bool(self.servers) and not self.linked


@dataclass(frozen=True)
class _Judgement:
    allowed: bool
    sub: str  # the clicker's person; "" when not linked
    why: str  # for the audit


class StopRights:
    def __init__(
        self,
        stops: TurnStops,
        store: TurnStore,
        identities: CurrentIdentities,
        registry: SharedSnapshot,
        audit: AuditLog,
    ) -> None:
        self._stops = stops
        self._store = store
        self._identities = identities
        self._registry = registry
        self._audit = audit

    async def click(self, turn: Turn, user: str) -> StopClick:
        """A Stop click by Slack account `user` on `turn`'s message."""
        servers = sorted(await self._stops.servers(turn.id))
        shown = tuple(dict.fromkeys(name.rpartition("/")[2] for name in servers))
        judged = await self._judge(turn, user, servers)
        if not judged.allowed:
            await self._record(turn, user, judged, "denied")
            return StopClick("refused", shown, linked=bool(judged.sub))
        if (await self._store.status(turn.id)).get("status", "") not in _RUNNING:
            return StopClick("finished", shown)
        if not await self._stops.request(turn.id, user):
            return StopClick("already", shown)
        await self._record(turn, user, judged, "stopped")
        return StopClick("stopping", shown)

    async def _judge(self, turn: Turn, user: str, servers: list[str]) -> _Judgement:
        clicker = await self._identities.identity(turn.team, user)
        sub = clicker.sub if clicker is not None else ""
        if user == turn.user:
            return _Judgement(True, sub, "the asker")
        if clicker is None:
            return _Judgement(False, "", "not linked")
        asker = await self._identities.identity(turn.team, turn.user)
        if asker is not None and asker.sub == sub:
            return _Judgement(True, sub, "the asker, from another Slack account")
        if not servers:
            return _Judgement(False, sub, "not the asker, and no server in use yet")
        try:
            groups = (await self._identities.current_identity(turn.team, user)).groups
            view = await self._registry.view()
        except (TokenUnavailable, RegistryUnavailable) as exc:
            log.warning("stop of turn %s by %s refused: %s", turn.id, user, type(exc).__name__)
            return _Judgement(False, sub, f"could not be checked: {exc}")
        for name in servers:
            entry = view.server(name)
            if entry is not None and view.approver_groups(entry) & groups:
                return _Judgement(True, sub, f"an approver for {entry.short_name}")
        return _Judgement(False, sub, f"not an approver for {', '.join(servers)}")

    async def _record(
        self, turn: Turn, user: str, judged: _Judgement, outcome: Literal["stopped", "denied"]
    ) -> None:
        record = turn_record(turn, judged.sub, "turn_stop", outcome, detail=judged.why, user=user)
        await self._audit.record(record)
