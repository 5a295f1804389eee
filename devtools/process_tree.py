"""Stopping a child process and everything under it, for the demo (issue 21 item 2).

A child is started in a session of its own (`start_new_session=True`), so a Ctrl-C at the terminal reaches
only the demo, which then stops its children in order (the bot before the Redis it writes to). A child is
asked first (SIGTERM to it alone: `chatops worker` stops its turn pools and work-horses itself); whatever of
its tree is still alive after the grace period is killed. The tree is read from /proc before asking, since a
process whose parent died is re-parented to init and no longer found under it; each process is matched by
its start time too, so a recycled pid is never killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

__all__ = ["descendants", "stop_tree"]

Identity = tuple[int, str]  # (pid, start time in clock ticks since boot)


def _stat(pid: int) -> list[str]:
    # Fields after the command name, which may hold spaces and parentheses: ppid is [1], starttime [19].
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _identity(pid: int) -> Identity | None:
    with contextlib.suppress(OSError, IndexError):
        return pid, _stat(pid)[19]
    return None


def descendants(root: int) -> list[Identity]:
    """Every living process under `root` (children, grandchildren...), as (pid, start time)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
    found: list[Identity] = []
    todo = list(parents.get(root, []))
    while todo:
        pid = todo.pop()
        identity = _identity(pid)
        if identity is not None:
            found.append(identity)
        todo += parents.get(pid, [])
    return found


def _kill_if_same(identity: Identity) -> None:
    if _identity(identity[0]) == identity:
        with contextlib.suppress(ProcessLookupError):
            os.kill(identity[0], signal.SIGKILL)


def stop_tree(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM `proc`, wait up to `grace` seconds, then SIGKILL it and whatever of its tree survived."""
    tree = descendants(proc.pid) if os.path.isdir("/proc") else []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    # Anything started after the tree was read is caught by its process group, which it inherited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for identity in [*tree, *descendants(proc.pid)]:
        _kill_if_same(identity)
