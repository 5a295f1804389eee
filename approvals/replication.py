"""Writes that must survive a Redis failover before anything acts on them (issue 21 item 6).

Redis replicates asynchronously: a primary that dies can take its last writes with it, and the replica
promoted in its place comes back without them. For most state that only loses a little (a click to repeat,
a counter). For a write that lets a side effect happen once — an approval turned RUNNING before its tool is
called — losing it would make the action APPROVED again, and the sweep would run it a second time.
`replicated` makes such a write and then waits (`WAIT`) until `replicas` replicas hold it; the caller acts
only after that. When they do not answer in time it raises `NotReplicated`, and the caller must not act.

`replicas=0` (a single Redis: dev, tests, a managed Redis without replicas) waits for nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as aioredis

from approvals.approval import Approval

__all__ = ["NO_REPLICAS", "NotReplicated", "Replication", "StartNotReplicated", "replicated"]

T = TypeVar("T")


@dataclass(frozen=True)
class Replication:
    replicas: int = 0  # how many replicas must hold a write before it is acted on
    timeout_ms: int = 2000  # how long to wait for them


NO_REPLICAS = Replication()


class NotReplicated(Exception):
    """The write was made on the primary, but fewer than the required replicas confirmed it in time."""

    def __init__(self, acked: int, wanted: int, result: object = None) -> None:
        super().__init__(f"{acked} of {wanted} Redis replicas confirmed the write")
        self.acked = acked
        self.wanted = wanted
        self.result = result  # what the write answered (the primary did make it)


class StartNotReplicated(NotReplicated):
    """The approval is RUNNING on the primary, but no replica confirmed it in time: it must not run."""

    def __init__(self, approval: Approval, acked: int, wanted: int) -> None:
        super().__init__(acked, wanted, approval)
        self.approval = approval


async def replicated(
    redis: aioredis.Redis, replication: Replication, write: Callable[[aioredis.Redis], Awaitable[T]]
) -> T:
    """`write(client)` and, when replicas are required, `WAIT` for them on the same connection (WAIT counts
    the writes of the connection it is sent on: on another pooled connection it would confirm nothing)."""
    if replication.replicas <= 0:
        return await write(redis)
    async with redis.client() as connection:
        result = await write(connection)
        acked = int(await connection.execute_command("WAIT", replication.replicas, replication.timeout_ms))  # type: ignore[no-untyped-call]
    if acked < replication.replicas:
        raise NotReplicated(acked, replication.replicas, result)
    return result
