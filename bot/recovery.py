"""Turns whose worker died: keep a lease while a turn runs, and let the sweep take over when it lapses.

- A running attempt renews its lease (approvals.turns) every third of its length. SIGKILL, an OOM kill or a
  lost machine stops the renewals; RQ itself never retries the job (it has no `Retry`, so RQ's cleanup only
  moves it to the FailedJobRegistry), and the thread's run claim would stay held.
- The sweep (bot.jobs.sweep, every SWEEP_INTERVAL_SECONDS) finds lapsed leases. A turn that was still
  running is run again as a new attempt ("recover-N", job id derived from the turn id), at most
  MAX_RECOVERIES times; then the person is told plainly in the thread that it could not finish.
- A recovery edits the dead attempt's "working" message instead of posting another, so the thread shows one
  answer. Read-only tool calls may run again; an approved action never does: those run on the actions
  queue under their own lease and become OUTCOME_UNKNOWN when their worker dies (approvals.sweep).
- An attempt that had finished its work but died before handing its thread on has only the handoff done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from approvals.leases import Leases, held_lease
from approvals.turns import Turn, TurnStore, base_attempt, recoveries, recovery_attempt
from bot import blocks
from bot.poster import Posted, Poster, PostError
from bot.queues import Queues

__all__ = ["MAX_RECOVERIES", "Leases", "TurnRecovery", "held_lease", "working_marker"]

log = logging.getLogger(__name__)

MAX_RECOVERIES = 2
GAVE_UP = "I couldn't finish this request: I tried {n} times and each try was cut short. Please ask me again."


def working_marker(turn_id: str, attempt: str) -> str:
    """The marker of an attempt's "working" message; a recovery finds the dead attempt's by it."""
    return f"{turn_id}:{base_attempt(attempt)}:working"


async def find_working(poster: Poster, turn: Turn, attempt: str) -> Posted | None:
    return await poster.find(turn.channel, turn.thread_ts, working_marker(turn.id, attempt))


@dataclass
class TurnRecovery:
    store: TurnStore
    poster: Poster
    queues: Queues

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
                    self.queues.enqueue_turn(turn_id, recovery_attempt(attempt, n))
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
        told = await self.store.mark_once(f"gave-up:{turn.id}:{attempt}")
        if told:
            text = GAVE_UP.format(n=n)
            message = blocks.error_message(text)
            try:
                working = await find_working(self.poster, turn, attempt)
                if working is not None:
                    await self.poster.update(
                        turn.channel, working.ts, text=message.text, blocks=message.blocks
                    )
                else:
                    await self.poster.post(
                        turn.channel,
                        text=message.text,
                        blocks=message.blocks,
                        thread_ts=turn.thread_ts,
                        marker=f"{turn.id}:{attempt}:gave-up",
                    )
                await self.poster.react(turn.channel, turn.ts, "eyes", remove=True)
            except PostError as exc:
                log.warning("could not tell the thread that turn %s failed: %s", turn.id, exc.error)
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
        self.queues.enqueue_turn(nxt, "handoff")
