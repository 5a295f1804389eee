"""Leases of running work, renewed while it runs (SPEC §10): a turn's attempt (approvals.turns), a workflow
run (approvals.workflow_runs) and an approved action (approvals.action_lease).

The worker running the work renews its lease every third of its length; a dead worker stops renewing, the
lease lapses, and the sweep finds it: a turn is taken over, a workflow run or an action is reported.
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
    """Where leases of running work are kept: TurnStore (turn, attempt), WorkflowRunStore (run, token),
    ActionLeases (approval, unused)."""

    async def renew(self, key: str, token: str, seconds: float, /) -> bool: ...

    async def release(self, key: str, token: str, /) -> None: ...


@contextlib.asynccontextmanager
async def held_lease(store: Leases, key: str, token: str, seconds: float) -> AsyncIterator[None]:
    """Renew the lease while the body runs; release it when the body returns.

    An exception leaves the lease to lapse, so the sweep takes the work over (or tells the person) instead
    of leaving a "working" message that never changes."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                if not await store.renew(key, token, seconds):
                    log.warning("%s (%s) lost its lease; the sweep may take it over", key, token)
                    return
            except RedisError as exc:  # the next renewal may get through; the lease has slack for it
                log.warning("could not renew the lease of %s: %s", key, type(exc).__name__)

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
            await store.release(key, token)
