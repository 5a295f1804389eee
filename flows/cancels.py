"""A cancellation that Python 3.11 dropped, raised again at a safe point.

redis-py bounds each write with `asyncio.wait_for`, which on Python 3.11 returns the command's result and
drops a cancel that lands just as the write completes (fixed in 3.12: CPython gh-86296); the task still
counts the request (`Task.cancelling()`). A turn ended then (its time limit, a question's wait cut short)
would run on to its next long wait. The flows call this before such waits and at the loop's safe points.
"""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelled"]


def raise_if_cancelled() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
