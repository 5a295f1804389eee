"""Remembered tool listings: a turn starts without waiting for every server's tools/list, yet no call ever
reaches a tool whose definition changed since the listing the model was shown."""

from __future__ import annotations

from fixtures.mcp_base import RecordedRequest
from tests.mcp_clients.conftest import Env


def _lists(records: list[RecordedRequest], sub: str | None = None) -> int:
    return sum(1 for r in records if r.rpc_method == "tools/list" and (sub is None or r.sub == sub))


async def test_a_second_turn_is_listed_from_memory_and_relisted_in_the_background(env: Env) -> None:
    presto = env.world.servers["presto"]
    caller = await env.caller("alice")
    async with env.cached.session(caller) as first:
        live = {s.model_name: s.fingerprint for s in await first.tools()}
    assert _lists(presto.record.all()) == 1
    async with env.cached.session(caller) as second:
        remembered = {s.model_name: s.fingerprint for s in await second.tools()}
        outcome = await second.call("presto__query_history", {"limit": 1})
    assert remembered == live
    assert outcome.ok, outcome.text
    # The background re-listing ran (the call waited for it), under alice's own token.
    assert _lists(presto.record.all(), sub=caller.identity.sub) == 2


async def test_a_tool_poisoned_since_the_remembered_listing_is_never_called(env: Env) -> None:
    presto = env.world.servers["presto"]
    caller = await env.caller("alice")
    async with env.cached.session(caller) as first:
        await first.tools()
    presto.knobs.poison("query_history")
    async with env.cached.session(caller) as second:
        shown = {s.model_name for s in await second.tools()}
        outcome = await second.call("presto__query_history", {"limit": 1})
    assert "presto__query_history" in shown  # from memory: it was clean when listed
    assert not outcome.ok
    assert outcome.error_kind == "refused"
    assert "withheld" in outcome.text
    assert presto.record.tool_calls("query_history") == []
    async with env.cached.session(caller) as third:  # the re-listing replaced what is remembered
        assert "presto__query_history" not in {s.model_name for s in await third.tools()}


async def test_a_tool_whose_definition_changed_is_refused_until_listed_again(env: Env) -> None:
    presto = env.world.servers["presto"]
    caller = await env.caller("alice")
    async with env.cached.session(caller) as first:
        before = {s.model_name: s.fingerprint for s in await first.tools()}
    presto.knobs.lie_about_annotations(["kill_query"])  # its annotations, so its fingerprint, change
    async with env.cached.session(caller) as second:
        await second.tools()
        outcome = await second.call("presto__kill_query", {"query_id": "q-1", "reason": "test"})
    assert outcome.error_kind == "refused"
    assert "changed while I was working" in outcome.text
    assert presto.record.tool_calls("kill_query") == []
    async with env.cached.session(caller) as third:  # listed again: the model now sees the new definition
        after = {s.model_name: s.fingerprint for s in await third.tools()}
    assert after["presto__kill_query"] != before["presto__kill_query"]
    assert after["presto__query_history"] == before["presto__query_history"]


async def test_listings_are_remembered_per_person(env: Env) -> None:
    presto = env.world.servers["presto"]
    alice, bob = await env.caller("alice"), await env.caller("bob")
    async with env.cached.session(alice) as session:
        await session.tools()
    async with env.cached.session(bob) as session:
        await session.tools()
    # bob's first turn was listed live under his own token, not served from alice's listing
    assert _lists(presto.record.all(), sub=bob.identity.sub) == 1


async def test_a_fresh_listing_ignores_what_is_remembered(env: Env) -> None:
    presto = env.world.servers["presto"]
    caller = await env.caller("alice")
    async with env.cached.session(caller) as first:
        await first.tools()
    presto.knobs.poison("query_history")
    async with env.cached.session(caller) as fresh:  # what an approved action does before it runs
        names = {s.model_name for s in await fresh.tools(fresh=True)}
    assert "presto__query_history" not in names
    assert "presto__query_history" in fresh.disabled


async def test_a_server_failing_at_the_start_of_a_turn_still_shows_its_remembered_tools(env: Env) -> None:
    presto = env.world.servers["presto"]
    caller = await env.caller("alice")
    async with env.cached.session(caller) as first:
        await first.tools()
    presto.knobs.fail_auth(10, status=403, scope="presto.read")
    async with env.cached.session(caller) as second:
        names = {s.model_name for s in await second.tools()}
    assert "presto__query_history" in names  # a live listing would have found nothing
    assert "io.example/presto" not in second.unavailable


async def test_a_server_found_unreachable_is_not_waited_for_again_by_the_next_turn(env: Env) -> None:
    caller = await env.caller("alice")
    async with env.cached.session(caller) as first:  # search-logs is registered at a dead address
        await first.tools()
    assert "io.example/search-logs" in first.unavailable
    async with env.cached.session(caller) as second:
        names = {s.model_name for s in await second.tools()}
    assert "unreachable a moment ago" in second.unavailable["io.example/search-logs"]
    assert "presto__query_history" in names  # the others are unaffected
    async with env.cached.session(caller) as approved:  # an approved action always tries for real
        await approved.tools(fresh=True)
    assert "moment ago" not in approved.unavailable["io.example/search-logs"]


async def test_what_is_built_from_a_remembered_listing_follows_the_registry(env: Env) -> None:
    """The process keeps what it built from a remembered listing, but only for that registry version."""
    caller = await env.caller("alice")
    for _ in range(3):  # live, then from memory (built), then from memory (kept)
        async with env.cached.session(caller) as session:
            assert "presto__query_history" in {s.model_name for s in await session.tools()}
    env.world.registry.patch_governance("io.example/presto", {"tools": {"query_history": {"enabled": False}}})
    await env.cached.snapshot.refresh_now()
    async with env.cached.session(caller) as session:
        shown = {s.model_name for s in await session.tools()}
    assert "presto__query_history" not in shown
    assert "presto__kill_query" in shown


async def test_a_poisoned_tool_stays_withheld_in_every_turn_served_from_memory(env: Env) -> None:
    env.world.servers["presto"].knobs.poison("query_history")
    caller = await env.caller("alice")
    for _ in range(3):  # live, then from memory (built), then from memory (kept)
        async with env.cached.session(caller) as session:
            shown = {s.model_name for s in await session.tools()}
            outcome = await session.call("presto__query_history", {"limit": 1})
        assert "presto__query_history" not in shown
        assert set(session.withheld) == {"presto__query_history"}  # reported to the audit each turn
        assert not outcome.ok
    assert env.world.servers["presto"].record.tool_calls("query_history") == []
