"""ACCEPTANCE 43: a server whose token audience is not its URL (governance `resource` names a logical URI).

Every other fixture server accepts tokens for its own URL, so a bot that confused the two would pass every
other test. Here presto accepts only `aud = LOGICAL` while it is served on loopback: the person's question is
answered from it, and nothing is ever asked of the identity provider for its URL as an audience.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from fixtures.anthropic_fake import Body, Reply, text, tool_results, tool_use
from fixtures.redis_proc import RedisProc
from fixtures.world import World, start_world
from tests.scenarios.conftest import scenario_of

LOGICAL = "https://presto.mcp.example.com/mcp"


@pytest.fixture(scope="module")
def logical_world() -> Iterator[World]:
    world = start_world(audiences={"presto": LOGICAL})
    yield world
    world.stop()


def asks_presto(body: Body) -> Reply:
    if not tool_results(body):
        return tool_use("presto__slow_queries", {"min_seconds": 600})
    return text("The runaway backfill is the slowest query.")


def test_a_logical_audience_gets_tokens_for_itself_and_never_for_the_url(
    logical_world: World, scenario_redis: RedisProc
) -> None:
    redis.Redis.from_url(scenario_redis.url).flushall()
    presto = logical_world.servers["presto"]
    assert presto.url != LOGICAL
    assert presto.resource == LOGICAL
    with scenario_of(logical_world, scenario_redis.url) as s:
        s.link("alice")
        s.world.anthropic.set_default(asks_presto)
        mention = s.ingress.app_mention("U0ALICE", "C0INCIDENT", "which queries are slow?")
        s.ingress.post(mention)
        s.work()
        answer = " ".join(m.text for m in s.bot_messages("C0INCIDENT", mention.event["ts"]))
        assert "runaway backfill is the slowest" in answer

    # The server saw only tokens for its own audience, and accepted them.
    calls = presto.record.tool_calls("slow_queries")
    assert len(calls) == 1
    assert calls[0].aud == LOGICAL
    assert calls[0].token_valid
    assert calls[0].status == 200
    assert {r.aud for r in presto.record.all() if r.authorization} == {LOGICAL}
    # Linking asked for the logical resource, and no token request ever named the URL as an audience.
    (authorize,) = logical_world.idp.requests("/authorize")
    assert LOGICAL in authorize.resources
    assert presto.url not in authorize.resources
    for request in logical_world.idp.requests("/token"):
        assert presto.url not in request.resources
    assert any(LOGICAL in r.resources for r in logical_world.idp.requests("/token"))
