"""The turn's signs of life (eyes, working message) wait for the model to be asked, but never for long."""

from __future__ import annotations

import asyncio

from flows.answer import after_asking


async def test_a_sign_goes_out_right_after_the_model_is_asked() -> None:
    asked = asyncio.Event()
    seen: list[bool] = []

    async def sign() -> str:
        seen.append(asked.is_set())
        return "posted"

    task = asyncio.ensure_future(after_asking(asked, sign()))
    for _ in range(5):
        await asyncio.sleep(0)
    assert seen == []  # held while the turn gets ready to ask
    asked.set()
    assert await task == "posted"
    assert seen == [True]


async def test_a_sign_goes_out_anyway_when_the_model_is_never_asked() -> None:
    seen: list[str] = []

    async def sign() -> None:
        seen.append("eyes")

    await asyncio.wait_for(after_asking(asyncio.Event(), sign()), timeout=5)
    assert seen == ["eyes"]
