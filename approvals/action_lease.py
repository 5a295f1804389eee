"""The lease of an approved action while it runs, renewed by the worker running it (SPEC §10).

`ApprovalStore.start` moves a record to RUNNING with a lease (`lease_until`, and its score in the running
set); the sweep turns a RUNNING record whose lease has passed into OUTCOME_UNKNOWN, because its worker must
have died mid-call. No fixed lease fits every call (a slow server, a slow identity provider, a long listing),
so the worker renews it while the execution runs (`approvals.leases.held_lease`, every third of its length): a
live worker's action is never reported lost, and a dead one's is found within one lease and one sweep.

`ActionLeases` satisfies `approvals.leases.Leases`: `renew` extends the lease of a record that is still
RUNNING (one Lua script, so a renewal can never revive a record the sweep has already ended); `release` does
nothing, since finishing the record (`ApprovalStore.finish`) takes it out of the running set.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis

from approvals.store import RUNNING_KEY

__all__ = ["ActionLeases"]

# KEYS: record, running. ARGV: id, lease_until.
_RENEW = """
if redis.call('HGET', KEYS[1], 'status') ~= 'RUNNING' then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""


class ActionLeases:
    def __init__(self, redis: aioredis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._renew = redis.register_script(_RENEW)

    async def renew(self, approval_id: str, token: str, seconds: float, /) -> bool:
        """Extend the lease of a RUNNING action to `seconds` from now; False once it is no longer running.
        `token` is unused: only the one worker that won APPROVED → RUNNING runs (and renews) an action."""
        until = repr(self._clock() + seconds)  # a float repr, as the store writes lease_until
        keys = [f"chatops:approval:{approval_id}", RUNNING_KEY]
        return bool(await self._renew(keys=keys, args=[approval_id, until]))

    async def release(self, approval_id: str, token: str, /) -> None:
        return None
