"""A server that answers badly affects only itself (SPEC §6 "Totality", ACCEPTANCE 44).

A raw JSON-RPC server (fixtures/mcp_raw.py) sits in the registry beside the world's presto: it answers
malformed listings (a tool with a non-object `inputSchema`, a `tools` that is not a list, garbage), malformed
results (`content: "text"`), bodies past the size cap, slowly. Its bad tools are withheld with the reason,
the rest of its tools and every other server keep working, the breaker counts it, and nothing raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent.loop import tool_params
from fixtures.anthropic_tools import tools_problem
from fixtures.mcp_raw import GOOD_TOOL, RawMcp, running_raw_mcp
from fixtures.registry import GOVERNANCE, OFFICIAL
from mcp_clients.body_cap import DEFAULT_MAX_BODY_BYTES
from mcp_clients.gateway import Breaker, Gateway
from tests.mcp_clients.conftest import Env

BAD_TOOL = {"name": "bad", "description": "A tool with a string schema.", "inputSchema": {"type": "string"}}
TOO_BIG = DEFAULT_MAX_BODY_BYTES + 1024


def entry(name: str, url: str) -> dict[str, Any]:
    gov = {"status": "active", "owner_team": "t", "auth": "none", "allowed_groups": ["*"], "resource": url}
    return {
        "server": {"name": name, "version": "1.0.0", "remotes": [{"type": "streamable-http", "url": url}]},
        "_meta": {OFFICIAL: {"status": "active", "isLatest": True}, GOVERNANCE: gov},
    }


@pytest.fixture(scope="module")
def raw_server() -> Iterator[tuple[RawMcp, str]]:
    with running_raw_mcp("hostile") as (raw, server):
        yield raw, f"{server.url}/mcp"


@pytest.fixture
def hostile(env: Env, raw_server: tuple[RawMcp, str]) -> Iterator[RawMcp]:
    raw, url = raw_server
    raw.reset()
    env.world.registry.add(entry("io.example/hostile", url))
    yield raw
    raw.reset()


async def listed(env: Env, gateway: Gateway | None = None) -> tuple[set[str], dict[str, str], dict[str, str]]:
    """(tool names offered, withheld model name -> why, unavailable server -> why) for alice."""
    async with (gateway or env.gateway).session(await env.caller("alice")) as session:
        names = {t.model_name for t in await session.tools()}
        return names, {n: why for n, (_, _, why) in session.withheld.items()}, dict(session.unavailable)


async def test_a_tool_with_a_non_object_schema_is_withheld_and_the_rest_of_its_server_works(
    env: Env, hostile: RawMcp
) -> None:
    hostile.answer("tools/list", {"tools": [GOOD_TOOL, BAD_TOOL, 7]})
    async with env.gateway.session(await env.caller("alice")) as session:
        names = {t.model_name for t in await session.tools()}
        echoed = await session.call("hostile__echo", {"text": "hi"})
        history = await session.call("presto__query_history", {"limit": 1})
    assert {"hostile__echo", "presto__query_history"} <= names
    assert "hostile__bad" not in names
    assert "inputSchema.type: Input should be 'object'" in session.withheld["hostile__bad"][2]
    assert any("not an object" in why for _, _, why in session.withheld.values())  # the 7
    assert echoed.ok, echoed.text
    assert history.ok, history.text


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ({"result": {"tools": 5}}, "tools is int, not a list"),
        ({"result": {"tools": [], "nextCursor": 5}}, "nextCursor"),
        ({"body": b"{not json"}, "Failed to parse JSON response"),
        ({"body": b"x" * TOO_BIG}, "announced"),
        ({"body": b"x" * TOO_BIG, "chunked": True}, "sent more than 4 MiB; not read further"),
        ({"body": b"", "content_type": "text/html"}, "Unexpected content type"),
    ],
)
async def test_a_listing_broken_as_a_whole_makes_only_its_server_unavailable_with_the_reason(
    env: Env, hostile: RawMcp, answer: dict[str, Any], why: str
) -> None:
    hostile.answer("tools/list", **answer)
    names, _, unavailable = await listed(env)
    assert not any(n.startswith("hostile__") for n in names)
    assert why in unavailable["io.example/hostile"]
    assert "presto__query_history" in names


async def test_a_slow_listing_costs_every_turn_at_most_the_listing_timeout(env: Env, hostile: RawMcp) -> None:
    hostile.answer("tools/list", {"tools": [GOOD_TOOL]}, delay=5)
    quick = Gateway(env.gateway.snapshot, env.broker, breaker=Breaker(), list_timeout=0.5)
    names, _, unavailable = await listed(env, quick)
    assert "did not list its tools within 0.5 s" in unavailable["io.example/hostile"]
    assert "presto__query_history" in names


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ({"result": {"content": "text"}}, "content: Input should be a valid list"),
        ({"result": {"content": [{"type": "text", "text": 5}]}}, "not a valid tool result"),
        ({"result": {"content": [{"type": "image"}]}}, "not a valid tool result"),
        ({"result": ["content"]}, "Failed to parse JSON response"),
        ({"body": b"<html>"}, "Failed to parse JSON response"),
        ({"body": b"x" * TOO_BIG, "chunked": True}, "sent more than 4 MiB; not read further"),
    ],
)
async def test_a_malformed_result_is_an_outcome_that_says_the_call_was_made(
    env: Env, hostile: RawMcp, answer: dict[str, Any], why: str
) -> None:
    async with env.gateway.session(await env.caller("alice")) as session:
        await session.tools()
        hostile.answer("tools/call", **answer)
        outcome = await session.call("hostile__echo", {"text": "hi"})
        history = await session.call("presto__query_history", {"limit": 1})
    assert (outcome.ok, outcome.error_kind) == (False, "malformed")
    assert why in outcome.text
    assert "the call was made, so its effect is unknown" in outcome.text
    assert len(hostile.calls("tools/call")) == 1
    assert history.ok


async def test_malformed_results_trip_the_breaker_and_then_nothing_more_reaches_the_server(
    env: Env, hostile: RawMcp
) -> None:
    async with env.gateway.session(await env.caller("alice")) as session:
        await session.tools()
        hostile.answer("tools/call", {"content": "text"})
        kinds = [(await session.call("hostile__echo", {"text": "x"})).error_kind for _ in range(4)]
    assert kinds == ["malformed", "malformed", "malformed", "unavailable"]
    assert len(hostile.calls("tools/call")) == 3
    assert env.gateway.breaker.is_open("io.example/hostile")


async def test_a_withheld_tool_is_still_reported_when_the_listing_is_served_from_memory(
    env: Env, hostile: RawMcp
) -> None:
    hostile.answer("tools/list", {"tools": [GOOD_TOOL, BAD_TOOL]})
    await listed(env, env.cached)  # lists live, remembers the listing and what it withheld
    lists_before = len(hostile.calls("tools/list"))
    async with env.cached.session(await env.caller("alice")) as session:
        names = {t.model_name for t in await session.tools()}
        assert len(hostile.calls("tools/list")) == lists_before  # from memory: nothing asked yet
        withheld = dict(session.withheld)
    assert "hostile__echo" in names
    assert "its server lists it malformed" in withheld["hostile__bad"][2]
    assert env.cached.listings is not None
    shown = await env.cached.listings.withheld([("io.example/hostile", hostile_url(env))])
    assert "inputSchema.type" in shown["io.example/hostile"]["bad"]


def hostile_url(env: Env) -> str:
    return str(env.world.registry.entry("io.example/hostile")["server"]["remotes"][0]["url"])


async def test_a_server_whose_header_variable_is_unset_is_unavailable_and_never_asked(
    env: Env, hostile: RawMcp
) -> None:
    env.world.registry.patch_governance("io.example/hostile", {"headers": {"X-Api-Key": "CHATOPS_HEADER_T1"}})
    gateway = Gateway(env.gateway.snapshot, env.broker, breaker=Breaker(), environ={})
    names, _, unavailable = await listed(env, gateway)
    assert "CHATOPS_HEADER_T1, which is not set" in unavailable["io.example/hostile"]
    assert hostile.calls("tools/list") == []
    assert "presto__query_history" in names


async def test_a_remote_header_goes_on_every_request_to_its_server_and_to_no_other(
    env: Env, hostile: RawMcp
) -> None:
    env.world.registry.patch_governance("io.example/hostile", {"headers": {"X-Api-Key": "CHATOPS_HEADER_T1"}})
    gateway = Gateway(
        env.gateway.snapshot, env.broker, breaker=Breaker(), environ={"CHATOPS_HEADER_T1": "k-5f1e2d"}
    )
    async with gateway.session(await env.caller("alice")) as session:
        await session.tools()
        assert (await session.call("hostile__echo", {"text": "x"})).ok
        assert (await session.call("presto__query_history", {"limit": 1})).ok
    assert len(hostile.headers) >= 3  # the handshake, the listing, the call
    assert all(h.get("x-api-key") == "k-5f1e2d" for h in hostile.headers)
    assert all("k-5f1e2d" not in (r.authorization or "") for r in env.world.servers["presto"].record.all())


async def test_a_top_level_any_of_is_offered_folded_and_the_server_receives_what_the_model_wrote(
    env: Env, hostile: RawMcp
) -> None:
    by_id = {"type": "object", "properties": {"query_id": {"type": "string"}}, "required": ["query_id"]}
    by_user = {"type": "object", "properties": {"user": {"type": "string"}}, "required": ["user"]}
    kill = {
        "name": "kill",
        "description": "Kill queries.",
        "inputSchema": {"type": "object", "anyOf": [by_id, by_user]},
        "annotations": {"readOnlyHint": True},  # runs at once: the registry names no approvers here
    }
    broken = {"name": "broken", "inputSchema": {"type": "object", "properties": {"a": {"type": 5}}}}
    hostile.answer("tools/list", {"tools": [GOOD_TOOL, kill, broken]})
    async with env.gateway.session(await env.caller("alice")) as session:
        tools = {t.model_name: t for t in await session.tools()}
        outcome = await session.call("hostile__kill", {"user": "etl-backfill"})
        withheld = dict(session.withheld)
    assert tools_problem(tool_params(tools.values())) is None  # every tool the model is shown
    assert "at least one of: (query_id) | (user)" in tools["hostile__kill"].description
    assert outcome.ok, outcome.text
    assert hostile.calls("tools/call")[-1]["arguments"] == {"user": "etl-backfill"}
    assert "hostile__broken" not in tools
    assert (
        "the model API cannot take it: its input schema is not valid JSON Schema"
        in withheld["hostile__broken"][2]
    )
