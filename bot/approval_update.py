"""What a resumed conversation is told about its approvals: who decided, and what happened (SPEC §6).

The update is written by the bot, so nothing a server said may read as the bot's or the approval system's
own words: an approved call's output, its error and why its outcome is unknown all sit inside the
untrusted-data delimiters, labelled with their server (`untrusted_outcome`). The outcome of a call to a
`private_data` server is read by the model for its requester now, and kept out of the thread's memory:
`Incoming.stored` is the update with that output withheld.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.prompt import wrap_tool_output
from agent.transcript import call_digest
from approvals.store import Approval, Status
from registry_cache.view import RegistryView

__all__ = ["Incoming", "approval_update", "private_data", "untrusted_outcome"]

HEADER = "[Update from the approval system; not typed by a person]"
FOOTER = "Continue from here: tell the person what happened and what is left to do."
WITHHELD = "[withheld: private data, shown only to <@{user}>]"
RAN = frozenset({Status.SUCCEEDED, Status.FAILED, Status.OUTCOME_UNKNOWN})


@dataclass(frozen=True)
class Incoming:
    """A non-human message that continues a conversation. `stored` is what the thread's memory keeps;
    `private`: it carries a `private_data` server's output, so the turn answers its requester alone."""

    text: str
    stored: str = ""
    rejected: tuple[str, ...] = ()
    private: bool = False


def private_data(view: RegistryView | None, server: str) -> bool:
    """Whether `server` keeps its results to the person who asked. Unknown (no registry copy, the entry
    gone) counts as private: output shown by mistake cannot be taken back."""
    entry = view.server(server) if view is not None else None
    return entry is None or entry.governance.private_data


def untrusted_outcome(approval: Approval) -> str:
    """What the approved call's server said (output or error), as untrusted data from that server: the one
    form in which an approved action's outcome reaches the model."""
    return wrap_tool_output(approval.server, approval.tool, approval.outcome_detail or "(nothing)")


def approval_update(approvals: Sequence[Approval], view: RegistryView | None) -> Incoming:
    """The message that resumes a paused conversation, built from its approvals' records."""
    shown, kept, rejected, private = [HEADER], [HEADER], [], False
    for a in approvals:
        call = f"`{a.short_name}.{a.tool}` (requested by <@{a.requester}>)"
        by = ", ".join(f"<@{u}>" for u in a.decided_by) or "nobody"
        if a.status in RAN:
            said = {
                Status.SUCCEEDED: f"{call} was approved by {by} and ran. Its output:",
                Status.FAILED: f"{call} was approved by {by} but did not succeed. What was reported:",
                Status.OUTCOME_UNKNOWN: f"{call} was approved by {by}; its outcome is unknown. Do not run it "
                "again; tell the person to check. What was reported:",
            }[a.status]
            secret = private_data(view, a.server)
            private = private or secret
            shown.append(f"{said}\n{untrusted_outcome(a)}")
            kept.append(f"{said}\n{WITHHELD.format(user=a.requester) if secret else untrusted_outcome(a)}")
            continue
        if a.status == Status.REJECTED:
            rejected.append(call_digest(a.model_name, a.arguments))
            line = (
                f"{call} was rejected by {by}: {a.reject_reason or 'no reason given'}. "
                "Do not propose it again unless the person asks."
            )
        elif a.status == Status.EXPIRED:
            line = f"{call} expired without a decision and did not run."
        else:
            continue
        shown.append(line)
        kept.append(line)
    shown.append(FOOTER)
    kept.append(FOOTER)
    return Incoming("\n\n".join(shown), "\n\n".join(kept), tuple(rejected), private)
