"""The canned workflow files (SPEC §8), reloaded when WORKFLOWS_DIR changes: operators edit them without
restarting anything."""

from __future__ import annotations

import logging
import os

from agent.workflow import Workflow, load_workflows

__all__ = ["WorkflowCatalog"]

log = logging.getLogger(__name__)


class WorkflowCatalog:
    """The workflow files, reloaded when the folder changes (operators edit them without restarts)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._stamp: tuple[float, int] | None = None
        self.workflows: dict[str, Workflow] = {}
        self.errors: list[str] = []

    def current(self) -> dict[str, Workflow]:
        try:
            entries = [os.path.join(self.folder, n) for n in os.listdir(self.folder)]
            stamp = (max((os.path.getmtime(p) for p in entries), default=0.0), len(entries))
        except FileNotFoundError:
            stamp = (0.0, 0)
        if stamp != self._stamp:
            self._stamp = stamp
            found, errors = load_workflows(self.folder)
            self.workflows, self.errors = found, [str(e) for e in errors]
            for error in self.errors:
                log.warning("workflow file ignored: %s", error)
        return self.workflows
