"""A per-process circuit breaker per server: a dead server costs one timeout, not one per call."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Breaker"]


@dataclass
class Breaker:
    """Per-process breaker per server: `threshold` failures in a row open it for `cooldown` seconds."""

    threshold: int = 3
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, int] = field(default_factory=dict)
    _open_until: dict[str, float] = field(default_factory=dict)

    def is_open(self, server: str) -> bool:
        return self._open_until.get(server, 0.0) > self.clock()

    def record(self, server: str, ok: bool) -> None:
        if ok:
            self._failures.pop(server, None)
            return
        self._failures[server] = self._failures.get(server, 0) + 1
        if self._failures[server] >= self.threshold:
            self._open_until[server] = self.clock() + self.cooldown
            self._failures[server] = 0
