"""A model call raced against a person's Stop (agent.ports.Stop): whichever comes first wins, and the
other is cancelled, so a runaway investigation ends without waiting for the model to finish writing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass

from agent.ports import ModelReply, Stop

__all__ = ["Stopped", "unless_stopped"]


@dataclass(frozen=True)
class Stopped:
    who: str


async def unless_stopped(asking: Awaitable[ModelReply], stop: Stop) -> ModelReply | Stopped:
    """The model's reply, unless someone stops the run first: then the pending call is cancelled."""
    call, stopping = asyncio.ensure_future(asking), asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({call, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if call.done():
            return call.result()
        return Stopped(stopping.result())
    finally:
        for task in (call, stopping):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
