"""A settable clock for the approval and turn stores' tests (expiries and leases without waiting)."""

from __future__ import annotations

import pytest

T0 = 1_764_040_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
