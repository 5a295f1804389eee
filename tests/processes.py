"""Killing a `chatops worker` subprocess for real, as a crash would: its work-horse too.

RQ's work-horse calls setpgrp, so it is not in the worker's process group: it is found by parentage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def kill_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and its children (the work-horse mid-job, RQ's scheduler), then reap it."""
    for pid in [*children_of(worker.pid), worker.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.wait(timeout=10)
