"""Killing a `chatops worker` subprocess for real, as a crash would: its work-horse and turn pool too.

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
            with contextlib.suppress(OSError):
                if parent_of(int(entry)) == pid:
                    found.append(int(entry))
    return found


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def in_tree(pid: int, root: int) -> bool:
    """Whether `pid` is `root` or one of its descendants (a turn pool is a child of `chatops worker`)."""
    with contextlib.suppress(OSError, ValueError):
        while pid > 1:
            if pid == root:
                return True
            pid = parent_of(pid)
    return False


def kill_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and its children (the work-horse mid-job, the turn pool, RQ's scheduler), then
    reap it."""
    for pid in [*children_of(worker.pid), worker.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.wait(timeout=10)
