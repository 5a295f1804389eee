"""Whatever a server answers, the real gateway neither raises nor lets it cost another server anything.

A property test: hypothesis draws what a raw JSON-RPC server (fixtures/mcp_raw.py) answers to `tools/list`
and `tools/call` (any JSON where a result goes, tools of any shape, bytes that are not JSON, a body past
the size cap, a wrong id, error statuses, other content types). For each draw a real `Gateway` over a real
registry snapshot (real Redis) lists and calls both that server and a well-behaved one beside it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.mcp_raw import GOOD_TOOL, RawMcp, running_raw_mcp
from fixtures.redis_proc import RedisProc
from fixtures.registry import FakeRegistry
from fixtures.server import serve
from mcp_clients.body_cap import DEFAULT_MAX_BODY_BYTES
from mcp_clients.gateway import Breaker, Caller, Gateway, ToolOutcome
from mcp_clients.provider import Provider
from mcp_clients.sealing import Sealer
from mcp_clients.tokens import Identity, TokenBroker
from registry_cache.client import fetch_all
from registry_cache.snapshot import SharedSnapshot
from tests.mcp_clients.test_hostile_servers import entry

KINDS = {"refused", "auth", "scope", "unavailable", "timeout", "malformed", "tool_error", "protocol"}
CLOSED_ISSUER = "http://127.0.0.1:9"  # auth: none servers need no token; asking for one would fail loudly

leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
any_json = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.integers(0, 4).flatmap(lambda draw: any_json if draw == 4 else strategy)


schemas = st.fixed_dictionaries(
    {"type": maybe(st.just("object"))},
    optional={"properties": maybe(st.just({"text": {"type": "string"}})), "anyOf": any_json},
)
tools = st.fixed_dictionaries(
    {"name": maybe(st.sampled_from(["echo", "bad", "x y", ""])), "inputSchema": maybe(schemas)},
    optional={"description": maybe(st.text(max_size=20)), "annotations": any_json, "outputSchema": any_json},
)
# Mostly a listing whose `echo` is fine among hostile neighbours, so that the call path is reached too.
listings = maybe(
    st.fixed_dictionaries(
        {"tools": maybe(st.lists(maybe(tools), max_size=3).map(lambda extra: [GOOD_TOOL, *extra]))},
        optional={"nextCursor": maybe(st.just("again"))},
    )
)
blocks = st.fixed_dictionaries({"type": maybe(st.sampled_from(["text", "image"])), "text": maybe(st.text())})
results = maybe(
    st.fixed_dictionaries(
        {"content": maybe(st.lists(maybe(blocks), max_size=3))},
        optional={"isError": any_json, "structuredContent": any_json},
    )
)
bodies = st.sampled_from(
    [
        b"",
        b"{",
        b"null",
        b"[]",
        b'{"jsonrpc":"2.0","id":"not-yours","result":{}}',
        b"x" * (DEFAULT_MAX_BODY_BYTES + 1),
    ]
) | st.binary(max_size=40)


def answers(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly a JSON-RPC result of the drawn shape; else raw bytes, an error status, another content type."""
    kinds = [
        *[shaped.map(lambda r: {"result": r})] * 6,
        *[st.tuples(bodies, st.booleans()).map(lambda t: {"body": t[0], "chunked": t[1]})] * 2,
        st.tuples(shaped, st.sampled_from([400, 404, 500])).map(lambda t: {"result": t[0], "status": t[1]}),
        st.sampled_from(["text/html", "text/event-stream"]).map(
            lambda c: {"body": b"data: {}\n\n", "content_type": c}
        ),
    ]
    return st.integers(0, len(kinds) - 1).flatmap(lambda i: kinds[i])


@dataclass
class Servers:
    good: RawMcp
    hostile: RawMcp
    registry_url: str
    redis_url: str


@pytest.fixture(scope="module")
def servers(redis_server: RedisProc) -> Iterator[Servers]:
    with running_raw_mcp("good") as (good, good_at), running_raw_mcp("hostile") as (hostile, hostile_at):
        registry = FakeRegistry(
            [
                entry("io.example/good", f"{good_at.url}/mcp"),
                entry("io.example/hostile", f"{hostile_at.url}/mcp"),
            ]
        )
        with serve(registry.app) as registry_at:
            # A database of its own: the shared server holds other tests' registry snapshots.
            own = redis_server.url.rsplit("/", 1)[0] + "/7"
            with sync_redis.Redis.from_url(own) as client:
                client.flushdb()
            yield Servers(good, hostile, registry_at.url, own)


async def use_both(s: Servers) -> tuple[set[str], ToolOutcome, ToolOutcome]:
    redis = aioredis.Redis.from_url(s.redis_url)
    try:
        async with httpx2.AsyncClient() as http:
            broker = TokenBroker(
                redis, Provider(http, CLOSED_ISSUER, "c", "s"), Sealer([Fernet.generate_key().decode()])
            )
            snapshot = SharedSnapshot(
                redis, lambda: fetch_all(http, s.registry_url), ttl_seconds=600, stale_max_seconds=900
            )
            # No breaker between draws: each draw is judged on its own answers.
            gateway = Gateway(
                snapshot, broker, breaker=Breaker(threshold=10**9), call_timeout=2, list_timeout=2
            )
            identity = Identity(
                "T0", "U0SAM", "u-sam", "sam@example.com", frozenset({"sre"}), time.time(), ()
            )
            async with gateway.session(Caller("T0", "U0SAM", "C0OPS", identity)) as session:
                names = {t.model_name for t in await session.tools()}
                good = await session.call("good__echo", {"text": "x"})
                hostile = await session.call("hostile__echo", {"text": "x"})
                assert all(isinstance(why, str) and why for why in session.unavailable.values())
                assert all(isinstance(why, str) and why for _, _, why in session.withheld.values())
    finally:
        await redis.aclose()
    return names, good, hostile


@settings(max_examples=60)
@given(listing=answers(listings), result=answers(results))
def test_any_answer_of_one_server_costs_the_other_nothing_and_nothing_raises(
    servers: Servers, listing: dict[str, Any], result: dict[str, Any]
) -> None:
    servers.hostile.reset()
    servers.hostile.answer("tools/list", **listing)
    servers.hostile.answer("tools/call", **result)
    names, good, hostile = asyncio.run(use_both(servers))
    assert "good__echo" in names
    assert good.ok, good.text
    assert isinstance(hostile, ToolOutcome)
    assert hostile.ok or hostile.error_kind in KINDS, hostile
    assert isinstance(hostile.text, str)
