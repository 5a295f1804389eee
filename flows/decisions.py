"""What people decided on a paused turn's calls, as its resumed run takes it (agent.resume).

Each approval's record becomes the outcome of the call it was made for: what the server said when it ran
(`outcome_detail`, untrusted: the agent wraps it), or who rejected it and why, or that it expired. A
rejected call's digest is remembered so the model is refused it if it proposes it again unasked. An outcome
of a call to a `private_data` server (or one whose privacy cannot be told) is read by the model for its
requester now and kept out of the thread's memory (flows.thread_memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.deferred import Decided, DecidedStatus
from agent.transcript import call_digest
from approvals.store import Approval, Status
from registry_cache.view import RegistryView, private_data

__all__ = ["Decisions", "decisions"]

_DECIDED: dict[Status, DecidedStatus] = {
    Status.SUCCEEDED: "succeeded",
    Status.FAILED: "failed",
    Status.OUTCOME_UNKNOWN: "outcome_unknown",
    Status.REJECTED: "rejected",
    Status.EXPIRED: "expired",
    Status.WITHDRAWN: "withdrawn",
}
_RAN = frozenset({"succeeded", "failed", "outcome_unknown"})


@dataclass(frozen=True)
class Decisions:
    """`private`: tool_use ids of outcomes only the requester may see (the turn then answers them alone)."""

    outcomes: tuple[Decided, ...] = ()
    rejected: tuple[str, ...] = ()
    private: frozenset[str] = frozenset()


def decisions(approvals: Sequence[Approval], view: RegistryView | None) -> Decisions:
    outcomes: list[Decided] = []
    rejected: list[str] = []
    private: set[str] = set()
    for a in approvals:
        status = _DECIDED.get(a.status)
        if status is None:  # still open: the turn resumes only once every approval has an outcome
            continue
        detail = a.reject_reason if status == "rejected" else a.outcome_detail if status in _RAN else ""
        by = tuple(f"<@{user}>" for user in a.decided_by)
        outcomes.append(Decided(a.tool_use_id, a.server, a.tool, status, detail, by))
        if status == "rejected":
            rejected.append(call_digest(a.model_name, a.arguments))
        if status in _RAN and private_data(view, a.server):
            private.add(a.tool_use_id)
    return Decisions(tuple(outcomes), tuple(rejected), frozenset(private))
