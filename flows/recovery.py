"""Turns whose worker died: the sweep takes a turn over when its lease lapses.

- A running attempt renews its lease (approvals.leases.held_lease) every third of its length. SIGKILL, an
  OOM kill or a lost machine stops the renewals; nothing runs the turn again by itself, and the thread's run
  claim would stay held.
- The sweep (every SWEEP_INTERVAL_SECONDS) finds lapsed leases. A turn that was still running is run again
  as a new attempt ("recover-N"), at most MAX_RECOVERIES times; then the person is told plainly in the
  thread that it could not finish.
- A recovery takes over the dead attempt's "working" message instead of posting another (the edge finds it),
  so the thread shows one answer. Read-only tool calls may run again; an approved action never does: those
  run under their own lease and become OUTCOME_UNKNOWN when their worker dies (the approval service).
- An attempt that had finished its work but died before handing its thread on has only the handoff done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from approvals.turns import Turn, TurnStore, recoveries, recovery_attempt
from flows.ports import RecoveryOutput, TurnSchedule

__all__ = ["MAX_RECOVERIES", "TurnRecovery"]

log = logging.getLogger(__name__)

MAX_RECOVERIES = 2


@dataclass
class TurnRecovery:
    store: TurnStore
    output: RecoveryOutput
    schedule: TurnSchedule

    async def sweep(self, now: float) -> dict[str, int]:
        recovered = gave_up = 0
        for turn_id, attempt in await self.store.expired_leases(now):
            turn = await self.store.load(turn_id)
            status = await self.store.status(turn_id)
            if turn is None:
                pass
            elif status.get("status") == "running" and status.get("attempt") == attempt:
                n = recoveries(attempt) + 1
                if n <= MAX_RECOVERIES:
                    log.warning("turn %s (%s) lost its worker; running it again", turn_id, attempt)
                    self.schedule.enqueue_turn(turn_id, recovery_attempt(attempt, n))
                    recovered += 1
                else:
                    await self._give_up(turn, attempt, n)
                    gave_up += 1
            else:
                await self._hand_on(turn)
            # Released only after acting on it: a sweep that dies in between leaves it for the next one.
            await self.store.release(turn_id, attempt)
        return {"turns_recovered": recovered, "turns_given_up": gave_up}

    async def _give_up(self, turn: Turn, attempt: str, n: int) -> None:
        if await self.store.mark_once(f"gave-up:{turn.id}:{attempt}"):
            await self.output.gave_up(turn, attempt, n)
            await self.store.set_status(turn.id, "failed", reason="worker lost")
        await self._hand_on(turn)

    async def _hand_on(self, turn: Turn) -> None:
        """Give the thread to its next request, as the dead attempt would have on its way out."""
        nxt = await self.store.end_run(turn.thread, turn.id)
        if nxt is None:
            # It may have died after handing the thread on but before queueing the next request.
            active = await self.store.active_run(turn.thread)
            if active is None or active == turn.id:
                return
            if (await self.store.status(active)).get("status") != "waiting_for_thread":
                return  # that one is running (or ran): it has a lease of its own
            nxt = active
        self.schedule.enqueue_turn(nxt, "handoff")
