"""The fixture Slack for the bot's tests that talk to it over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fixtures.slack import FakeSlack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    fake.start()
    yield fake
    fake.stop()
