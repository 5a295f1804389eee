"""The pure permission view: who may use which server and tool, what needs approval, who may approve.

No I/O here. Built from one registry snapshot, answered in microseconds, tested exhaustively. Every rule is
SPEC §6; where the spec is silent the view fails closed. A sensitive tool that nobody may approve (no approver
groups) is `ApprovalRule.unapprovable`: the gateway withholds it from the model with NOBODY_MAY_APPROVE as the
reason, and a workflow step calling it fails before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from registry_cache.model import ServerEntry, Skipped

__all__ = ["NOBODY_MAY_APPROVE", "Access", "ApprovalRule", "Person", "RegistryView", "private_data"]

EVERYONE = "*"
# Why a tool is withheld from the model when its calls need an approval that nobody may give (SPEC §6):
# offered, each call could only wait on a card until it expired.
NOBODY_MAY_APPROVE = "it needs approval and the registry names nobody who may approve it (no approver_groups)"


@dataclass(frozen=True)
class Person:
    """A linked company identity: what the identity provider says, not what Slack says."""

    sub: str
    email: str
    groups: frozenset[str]


@dataclass(frozen=True)
class Access:
    allowed: bool
    reason: str  # shown to the person when refused


@dataclass(frozen=True)
class ApprovalRule:
    required: bool
    approver_groups: tuple[str, ...]
    quorum: int
    why: str  # "registry policy", "tool not annotated read-only", "workflow step", "registry: never"

    def may_approve(self, groups: Iterable[str]) -> bool:
        return bool(set(self.approver_groups) & set(groups))

    @property
    def unapprovable(self) -> bool:
        """Needs an approval that nobody may give: such a tool is withheld, never offered."""
        return self.required and not self.approver_groups


class RegistryView:
    def __init__(self, entries: Sequence[ServerEntry], skipped: Sequence[Skipped] = ()) -> None:
        self.entries = tuple(entries)
        self.skipped = tuple(skipped)
        self._by_name = {e.name: e for e in self.entries}
        self._by_short = {e.short_name: e for e in self.entries}

    def server(self, name: str) -> ServerEntry | None:
        """Look up by full registry name or by short name."""
        return self._by_name.get(name) or self._by_short.get(name)

    def access(self, person: Person, entry: ServerEntry, channel: str | None) -> Access:
        if entry.official_status != "active":
            return Access(False, f"{entry.name} is {entry.official_status} in the registry")
        if not entry.usable:
            return Access(False, f"{entry.name} is {entry.governance.status} by its owners")
        allowed = entry.governance.allowed_groups
        if EVERYONE not in allowed and not set(allowed) & person.groups:
            groups = ", ".join(allowed) or "no group"
            return Access(False, f"{entry.name} is open to {groups}; you are not in any of them")
        channels = entry.governance.allowed_channels
        if channels and channel not in channels:
            return Access(False, f"{entry.name} may only be used in {', '.join(f'<#{c}>' for c in channels)}")
        return Access(True, "allowed")

    def servers_for(self, person: Person, channel: str | None) -> list[ServerEntry]:
        return [e for e in self.entries if self.access(person, e, channel).allowed]

    @staticmethod
    def tool_enabled(entry: ServerEntry, tool: str) -> bool:
        return entry.tool_policy(tool).enabled

    @staticmethod
    def approval(
        entry: ServerEntry, tool: str, *, read_only_hint: bool | None, step_requires: bool = False
    ) -> ApprovalRule:
        """Does a call to `tool` need approval, and from whom? Registry policy beats annotations."""
        policy = entry.tool_policy(tool)
        groups = (
            policy.approver_groups if policy.approver_groups is not None else entry.governance.approver_groups
        )
        quorum = policy.quorum if policy.quorum is not None else entry.governance.quorum
        if step_requires:
            return ApprovalRule(True, groups, quorum, "the workflow step requires approval")
        if policy.approval == "required":
            return ApprovalRule(True, groups, quorum, "the registry requires approval for this tool")
        if policy.approval == "never":
            return ApprovalRule(False, groups, quorum, "the registry marks this tool as safe to run")
        if read_only_hint is True:
            return ApprovalRule(False, groups, quorum, "the tool is annotated read-only")
        return ApprovalRule(True, groups, quorum, "the tool is not annotated read-only")

    @staticmethod
    def approver_groups(entry: ServerEntry) -> frozenset[str]:
        """Every group some approval rule of `entry` names: the server's own, and each enabled tool's (who
        may stop a turn that used it, flows.stop_rights). A disabled tool's rule governs no call."""
        groups = set(entry.governance.approver_groups)
        for policy in entry.governance.tools.values():
            if policy.enabled and policy.approver_groups is not None:
                groups.update(policy.approver_groups)
        return frozenset(groups)

    @staticmethod
    def minutes_saved(entry: ServerEntry, tool: str) -> float:
        policy = entry.tool_policy(tool)
        return policy.minutes_saved if policy.minutes_saved is not None else entry.governance.minutes_saved


def private_data(view: RegistryView | None, server: str) -> bool:
    """Whether `server` keeps its results to the person who asked. Unknown (no registry copy, the entry
    gone) counts as private: output shown by mistake cannot be taken back."""
    entry = view.server(server) if view is not None else None
    return entry is None or entry.governance.private_data
