"""SIGTERM and SIGINT end every `chatops` command the same way (issue 21 item 2): the first one becomes a
`Stopped` exception in the main thread, so every `finally` and `with` on the way out runs (the children a
command started are stopped, an embedded Redis too); then the process dies by that same signal, as a
process manager expects (a shell shows 143 or 130; systemd counts SIGTERM as a clean stop).

Servers that handle signals themselves (uvicorn, RQ's worker) replace these handlers while they run: uvicorn
re-raises the signal after its own shutdown, which lands here and unwinds the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from types import FrameType

__all__ = ["STOP_SIGNALS", "Stopped", "die_by", "log_in_handler", "raise_if_requested", "stop_on_signals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A stop signal arrived. BaseException, so no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    # Raised wherever the main thread is. Where Python swallows it (a destructor, an at-fork hook: "Exception
    # ignored in ..."), the stop would be lost; so signals stay armed (a second one tries again: also the
    # way to cut a slow cleanup short) and `requested` remembers it for the next `raise_if_requested`.
    global _requested
    _requested = signum
    raise Stopped(signum)


_requested: int | None = None


def raise_if_requested() -> None:
    """Raise `Stopped` for a signal whose exception was swallowed (call before a long blocking phase)."""
    if _requested is not None:
        raise Stopped(_requested)


def stop_on_signals() -> None:
    """Install the handlers (main thread only)."""
    for each in STOP_SIGNALS:
        signal.signal(each, _stop)


def die_by(signum: int) -> None:
    """End this process by `signum` with its default action, after the cleanup ran."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def log_in_handler(logger: logging.Logger, level: int, message: str, *args: object) -> None:
    """Log from a signal handler. The handler runs in the main thread between two bytecodes, possibly in the
    middle of that thread's own write to stderr: the write then fails ("reentrant call inside
    BufferedWriter"), and logging's report of the failure, written to stderr too, raises out of the handler
    into whatever the thread was doing. Call it after the handler has done its work: the line may be lost,
    the stop it reports is not."""
    with contextlib.suppress(RuntimeError):
        logger.log(level, message, *args)
