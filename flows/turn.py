"""The turn flow: one request answered in its thread, from the claim to handing the thread on.

    claim (a duplicate delivery stops here) -> lease, renewed while the turn runs (flows.recovery takes
    over a turn whose lease lapses) -> the thread's run (one request at a time per thread; a later one
    waits and is handed the thread) -> the answer (flows.answer) -> the thread to its next request

Under Sentinel the claim runs the turn only once a replica confirms it (approvals.replication): a claim a
failover loses would run the turn twice. Unconfirmed, the turn is left to the sweep, as if its worker died.

`attempt` tells legitimate re-runs (after linking, after waiting for the thread, after approvals, after a
lost worker) from duplicates of one delivery, which stop at the claim. `bot.jobs.turn_runner` is the entry
point.
"""

from __future__ import annotations

import asyncio
import logging
import time

from approvals.leases import held_lease
from approvals.replication import NotReplicated
from approvals.turns import Turn, TurnStore
from flows.answer import TurnAnswer
from flows.ports import Counters, TurnSchedule

__all__ = ["TurnFlow"]

log = logging.getLogger(__name__)


class TurnFlow:
    def __init__(
        self,
        store: TurnStore,
        answer: TurnAnswer,
        schedule: TurnSchedule,
        metrics: Counters,
        *,
        lease_seconds: float,
    ) -> None:
        self._store = store
        self._answer = answer
        self._schedule = schedule
        self._metrics = metrics
        self._lease = lease_seconds

    async def run(self, turn_id: str, attempt: str) -> str:
        turn = await self._store.load(turn_id)
        if turn is None:
            return "missing"
        try:
            claimed = await self._store.start(turn_id, attempt, self._lease)  # and a lease the sweep watches
        except NotReplicated as exc:
            # A failover could lose this claim and run the turn twice: leave it to the sweep, which takes it
            # over once the lease lapses (a recovery attempt, or the person told it could not finish).
            log.warning("turn %s (%s): %s; left to the sweep", turn_id, attempt, exc)
            return "claim not replicated"
        if not claimed:
            self._metrics.inc("chatops_dedupe_hits_total", {"stage": "turn_claim"})
            return "duplicate"
        async with held_lease(self._store, turn_id, attempt, self._lease):
            return await self._claimed(turn, attempt)

    async def _claimed(self, turn: Turn, attempt: str) -> str:
        # The person's recent requests list queued ones too; written while the thread's run is claimed (each
        # round trip before the first model request is waited for by the person).
        remembered = self._answer.remember(turn) if attempt == "first" else asyncio.sleep(0)
        _, began = await asyncio.gather(remembered, self._store.begin_run(turn.thread, turn.id))
        if not began:
            await self._store.set_status(turn.id, "waiting_for_thread")
            return "queued behind another request in this thread"
        outcome, started = "error", time.monotonic()
        try:
            outcome = await self._answer.answer(turn, attempt)
            return outcome
        finally:
            label = outcome.replace(" ", "_")
            self._metrics.inc("chatops_turns_total", {"outcome": label})
            self._metrics.observe("chatops_turn_seconds", {"outcome": label}, time.monotonic() - started)
            nxt = await self._store.end_run(turn.thread, turn.id)
            if nxt:
                self._schedule.enqueue_turn(nxt, "handoff")
