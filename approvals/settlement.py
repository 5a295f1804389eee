"""What waited on approvals continues once they all have outcomes (SPEC §7): a paused turn resumes, or a
workflow run goes on past its step.

A turn may pause on several calls at once; it resumes once, when the last of them is settled, under an
attempt name derived from the set of approvals (so however many outcomes race to it, one resume runs).
"""

from __future__ import annotations

import hashlib

from approvals.approval import Approval
from approvals.policy import TERMINAL
from approvals.ports import ActionQueue
from approvals.store import ApprovalStore

__all__ = ["Settlement"]


class Settlement:
    def __init__(self, store: ApprovalStore, queue: ActionQueue) -> None:
        self._store = store
        self._queue = queue

    async def settle(self, approval: Approval) -> None:
        """`approval` has an outcome: resume what waited on it if nothing else of the same turn is open."""
        siblings = await self._store.for_turn(approval.turn_id)
        if not siblings or any(a.status not in TERMINAL for a in siblings):
            return
        if approval.source == "workflow":
            self._queue.enqueue_workflow_resume(approval.workflow_run_id, approval.id)
            return
        digest = hashlib.sha256(",".join(sorted(a.id for a in siblings)).encode()).hexdigest()[:12]
        self._queue.enqueue_turn(approval.turn_id, f"resume-{digest}")
