"""Leases of running work: renewed while it runs, released when it returns, left to lapse when it fails.

A running turn (approvals.turns), approved action (approvals.action_lease) or workflow run
(approvals.workflow_runs) holds a lease that the sweep watches: SIGKILL, an OOM kill or a lost machine stops
the renewals, and the sweep then takes the work over or reports it (flows.recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from redis.exceptions import RedisError

__all__ = ["Leases", "held_lease"]

log = logging.getLogger(__name__)


class Leases(Protocol):
    """Where leases of running work are kept: TurnStore (turn, attempt), WorkflowRunStore (run, token)."""

    async def renew(self, key: str, token: str, seconds: float, /) -> bool: ...

    async def release(self, key: str, token: str, /) -> None: ...


@contextlib.asynccontextmanager
async def held_lease(store: Leases, turn_id: str, attempt: str, seconds: float) -> AsyncIterator[None]:
    """Renew the lease while the body runs; release it when the body returns.

    An exception leaves the lease to lapse, so the sweep retries the turn (or tells the person) instead of
    leaving a "working" message that never changes."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                if not await store.renew(turn_id, attempt, seconds):
                    log.warning("%s (%s) lost its lease; the sweep may take it over", turn_id, attempt)
                    return
            except RedisError as exc:  # the next renewal may get through; the lease has slack for it
                log.warning("could not renew the lease of %s: %s", turn_id, type(exc).__name__)

    renewing = asyncio.create_task(renew())
    finished = False
    try:
        yield
        finished = True
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        if finished:
            await store.release(turn_id, attempt)
