"""Admission (ACCEPTANCE 41): too long or empty is refused at once, and a person's requests beyond their
per-minute limit are refused, counted in a sliding minute in a real Redis."""

from __future__ import annotations

import redis.asyncio as aioredis

from approvals.tallies import Tallies
from approvals.turns import Turn
from flows.admission import Admission
from flows.ports import Refusal
from tests.approvals.conftest import Clock


def turn(n: int, text: str = "why did daily_ad_metrics fail?", user: str = "U0ALICE") -> Turn:
    ts = f"17640400{n:02d}.000100"
    return Turn(f"t{n}", "T0CHATOPS", "C0INCIDENT", "channel", user, text, ts, ts, 1_764_040_000.0)


def admission(aredis: aioredis.Redis, clock: Clock) -> Admission:
    return Admission(Tallies(aredis), per_minute=3, max_chars=100, clock=clock)


async def test_too_long_and_empty_requests_are_refused_with_their_sizes(
    aredis: aioredis.Redis, clock: Clock
) -> None:
    gate = admission(aredis, clock)
    assert await gate.refusal(turn(1, "x" * 101)) == Refusal("too_long", size=101, limit=100)
    assert await gate.refusal(turn(2, " \n ")) == Refusal("empty")
    assert await gate.refusal(turn(3, "x" * 100)) is None


async def test_a_person_past_their_limit_is_refused_until_the_minute_slides_by(
    aredis: aioredis.Redis, clock: Clock
) -> None:
    gate = admission(aredis, clock)
    assert [await gate.refusal(turn(n)) for n in range(3)] == [None, None, None]
    assert await gate.refusal(turn(3)) == Refusal("rate_limited")
    assert await gate.refusal(turn(4, user="U0BOB")) is None  # counted per person
    clock.now += 30
    assert await gate.refusal(turn(5)) == Refusal("rate_limited")  # a burst across a minute boundary too
    clock.now += 31  # the first three are now over a minute old
    assert await gate.refusal(turn(6)) is None
