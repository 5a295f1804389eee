"""The gateway lists what this person may use here and calls it with their own token for that server."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
from mcp.types import ToolAnnotations

from fixtures.mcp_base import FixtureMcp
from fixtures.server import start
from mcp_clients.gateway import Breaker, Gateway
from mcp_clients.listing import ListingCache
from mcp_clients.tokens import Audience
from tests.mcp_clients.conftest import TEAM, Env


async def test_a_data_engineer_gets_presto_but_not_finance_and_no_disabled_tool(env: Env) -> None:
    async with env.gateway.session(await env.caller("alice")) as session:
        names = {t.model_name for t in await session.tools()}
    assert {
        "presto__query_history",
        "presto__kill_query",
        "spark__failed_stages",
        "airflow__task_logs",
    } <= names
    assert not any(n.startswith("ledger__") for n in names)
    assert "presto__drop_table" not in names  # enabled: false
    assert not any(n.startswith("statuspage__") for n in names)  # only in #incidents
    assert env.world.servers["ledger"].record.all() == []


async def test_channel_restricted_tools_appear_only_in_their_channel(env: Env) -> None:
    async with env.gateway.session(await env.caller("alice", channel="C0INCIDENT")) as session:
        names = {t.model_name for t in await session.tools()}
    assert "statuspage__current_incidents" in names


async def test_a_suspended_server_never_appears(env: Env) -> None:
    env.world.registry.set_governance_status("io.example/presto", "suspended")
    async with env.gateway.session(await env.caller("alice")) as session:
        names = {t.model_name for t in await session.tools()}
    assert not any(n.startswith("presto__") for n in names)
    assert env.world.servers["presto"].record.all() == []


async def test_every_token_reaching_a_server_is_the_callers_for_that_server(env: Env) -> None:
    caller = await env.caller("alice")
    async with env.gateway.session(caller) as session:
        await session.tools()
        history = await session.call("presto__query_history", {"limit": 5})
        stages = await session.call("spark__failed_stages", {"app_id": "application_1764036000000_0042"})
    assert history.ok, history.text
    assert "20261125_021502_00017_abcde" in history.text
    assert stages.ok, stages.text
    for name, server in env.world.servers.items():
        for request in server.record.all():
            if request.authorization is None:
                continue
            token = request.authorization.removeprefix("Bearer ")
            claims = jwt.decode(token, options={"verify_signature": False})
            assert claims["aud"] == server.resource, name
            assert claims["sub"] == "u-alice"
            assert not token.startswith("xox")


async def test_a_tool_that_was_not_listed_is_refused_locally(env: Env) -> None:
    async with env.gateway.session(await env.caller("dave")) as session:
        await session.tools()
        outcome = await session.call("presto__kill_query", {"query_id": "x", "reason": "y"})
    assert not outcome.ok
    assert outcome.error_kind == "refused"
    assert env.world.servers["presto"].record.all() == []


async def test_annotations_and_registry_decide_approval(env: Env) -> None:
    async with env.gateway.session(await env.caller("alice")) as session:
        tools = {t.model_name: t for t in await session.tools()}
    assert tools["presto__kill_query"].needs_approval
    assert tools["presto__kill_query"].approval.quorum == 2
    assert not tools["presto__query_history"].needs_approval
    assert tools["airflow__clear_task_instances"].needs_approval
    assert not tools["airflow__task_logs"].needs_approval
    assert "owned by data-platform" in tools["presto__query_history"].description


async def test_output_is_capped_and_says_so(env: Env) -> None:
    env.world.servers["presto"].knobs.huge_output("query_history", 1)
    try:
        async with env.gateway.session(await env.caller("alice")) as session:
            await session.tools()
            outcome = await session.call("presto__query_history", {"limit": 1})
    finally:
        env.world.servers["presto"].knobs.reset()
    assert outcome.truncated
    assert len(outcome.text) < 2200
    assert "output truncated" in outcome.text


async def test_a_401_leads_to_one_refresh_and_one_retry(env: Env) -> None:
    caller = await env.caller("alice")
    async with env.gateway.session(caller) as session:
        await session.tools()
        presto = env.world.resource("presto")

        def refreshes() -> int:
            return sum(
                1
                for r in env.world.idp.requests("/token")
                if r.grant_type == "refresh_token" and r.resources == (presto,)
            )

        before = refreshes()
        env.world.servers["presto"].knobs.fail_auth(1, status=401)
        outcome = await session.call("presto__query_history", {"limit": 1})
    assert outcome.ok, outcome.text
    assert refreshes() == before + 1


async def test_a_403_insufficient_scope_says_what_is_missing(env: Env) -> None:
    async with env.gateway.session(await env.caller("alice")) as session:
        await session.tools()
        env.world.servers["presto"].knobs.fail_auth(5, status=403, scope="presto:kill")
        outcome = await session.call("presto__query_history", {"limit": 1})
    env.world.servers["presto"].knobs.reset()
    assert outcome.error_kind == "scope"
    assert "scope" in outcome.text


async def test_a_down_server_is_an_error_result_and_trips_the_breaker(env: Env) -> None:
    # Nothing listens on port 9; a path of its own, since search-logs is already at the bare DEAD_URL.
    env.world.registry.set_remote_url("io.example/spark", "http://127.0.0.1:9/spark/mcp")
    async with env.gateway.session(await env.caller("alice")) as session:
        names = {t.model_name for t in await session.tools()}
        assert not any(n.startswith("spark__") for n in names)
        assert "io.example/spark" in session.unavailable
    assert not env.gateway.breaker.is_open("io.example/spark")  # one failure is not a pattern yet


async def test_a_hanging_tool_times_out_and_says_the_outcome_is_unknown(env: Env) -> None:
    env.gateway.call_timeout = 0.5
    env.world.servers["presto"].knobs.hang("query_history")
    try:
        async with env.gateway.session(await env.caller("alice")) as session:
            await session.tools()
            outcome = await session.call("presto__query_history", {"limit": 1})
    finally:
        env.world.servers["presto"].knobs.release()
        env.world.servers["presto"].knobs.reset()
    assert outcome.error_kind == "timeout"
    assert "unknown" in outcome.text


async def test_a_connection_holds_its_token_instead_of_reading_it_for_every_call(env: Env) -> None:
    caller = await env.caller("alice")
    presto = env.world.resource("presto")

    def refreshes() -> int:
        return env.world.idp.counters().get("token.refresh_token.ok", 0)

    async with env.gateway.session(caller) as session:
        await session.tools()
        assert (await session.call("presto__query_history", {"limit": 1})).ok
        before = refreshes()
        shared = Audience("io.example/presto", presto, presto)
        await env.broker.invalidate("T0CHATOPS", caller.user, shared)  # the shared copy is gone
        for _ in range(5):
            assert (await session.call("presto__query_history", {"limit": 1})).ok
        # Every later call used the token this connection held: none had to ask the provider again.
        assert refreshes() == before
    async with env.gateway.session(caller) as fresh:  # a new connection reads (here: renews) it
        assert (await fresh.tools()) != []
    assert refreshes() == before + 1


async def test_a_server_whose_url_changed_carries_no_cached_token_listing_or_outage_over(env: Env) -> None:
    caller = await env.caller("alice")
    presto = env.world.servers["presto"]
    old_url = presto.url
    async with env.cached.session(caller) as session:
        await session.tools()
        assert (await session.call("presto__query_history", {"limit": 1})).ok
    before = [r.authorization for r in presto.record.tool_calls("query_history")]
    assert env.cached.listings is not None
    await env.cached.listings.mark_down(ListingCache.down_key("io.example/presto", old_url), "refused")
    # The same server, reached by another name: the audience stays, only the URL the registry gives moves.
    new_url = old_url.replace("127.0.0.1", "localhost")
    env.world.registry.set_remote_url("io.example/presto", new_url, resource=False)
    await env.cached.snapshot.refresh_now()
    presto.record.clear()
    async with env.cached.session(caller) as session:
        assert "presto__query_history" in {t.model_name for t in await session.tools()}
        assert "io.example/presto" not in session.unavailable  # the old URL's outage stays with the old URL
        assert [r.rpc_method for r in presto.record.all() if r.rpc_method == "tools/list"]  # listed live
        assert (await session.call("presto__query_history", {"limit": 1})).ok
    after = [r.authorization for r in presto.record.tool_calls("query_history")]
    assert after
    assert before
    assert after[0] != before[0]  # a token obtained for the new URL, not the cached one
    token = (after[0] or "").removeprefix("Bearer ")
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == presto.resource


@pytest.fixture
def tricky_servers(env: Env) -> Iterator[dict[str, str]]:
    """Two servers whose plain names used to meet: `a__b` listing `c`, and `a` listing `b__c`."""
    running, urls = [], {}
    for short, tool in (("a__b", "c"), ("a", "b__c")):
        fixture = FixtureMcp(short, resource="unused: auth none")

        def which(server: str = short) -> str:
            return f"answered by {server}"

        fixture.mcp.tool(name=tool, annotations=ToolAnnotations(read_only_hint=True))(which)
        server = start(fixture.app)
        running.append(server)
        urls[short] = f"{server.url}/mcp"
        entry = env.world.registry.entry("io.example/statuspage")
        entry["server"]["name"] = f"io.example/{short}"
        entry["server"]["remotes"] = [{"type": "streamable-http", "url": urls[short]}]
        entry["_meta"]["dev.chatops/governance"].update(resource=urls[short], allowed_channels=[], tools={})
        env.world.registry.add(entry)
    yield urls
    for server in running:
        server.stop()


async def test_tools_whose_plain_names_would_meet_get_distinct_names_and_reach_their_own_server(
    env: Env, tricky_servers: dict[str, str]
) -> None:
    async with env.gateway.session(await env.caller("alice")) as session:
        tools = {t.model_name: t for t in await session.tools()}
        mine = {
            name: (t.server, t.tool)
            for name, t in tools.items()
            if t.server in ("io.example/a", "io.example/a__b")
        }
        assert sorted(mine.values()) == [("io.example/a", "b__c"), ("io.example/a__b", "c")]
        assert mine["a__b__c"] == ("io.example/a", "b__c")
        for name, (server, _) in mine.items():
            outcome = await session.call(name, {})
            assert outcome.ok, outcome.text
            assert f"answered by {server.split('/')[1]}" in outcome.text


async def test_a_server_whose_name_resolves_to_the_metadata_service_is_never_connected_to(env: Env) -> None:
    entry = env.world.registry.entry("io.example/statuspage")
    entry["server"]["name"] = "io.example/innocent"
    entry["server"]["remotes"] = [{"type": "streamable-http", "url": "https://mcp.innocent.test/mcp"}]
    entry["_meta"]["dev.chatops/governance"].update(
        resource="https://mcp.innocent.test/mcp", allowed_channels=[]
    )
    env.world.registry.add(entry)  # the URL reads fine; only its address is wrong

    async def resolve(host: str, port: int) -> list[str]:
        return {"mcp.innocent.test": ["169.254.169.254"]}.get(host, ["127.0.0.1"])

    gateway = Gateway(env.gateway.snapshot, env.broker, breaker=Breaker(), resolver=resolve)
    async with gateway.session(await env.caller("alice")) as session:
        names = {t.model_name for t in await session.tools()}
    assert "presto__query_history" in names  # everything else still works
    assert not any(n.startswith("innocent__") for n in names)
    assert (
        "resolves to 169.254.169.254, a link-local cloud metadata address"
        in session.unavailable["io.example/innocent"]
    )


async def test_a_person_without_a_token_does_not_make_a_server_unreachable_for_everyone_else(
    env: Env,
) -> None:
    alice, bob = await env.caller("alice"), await env.caller("bob")
    await env.broker.unlink(TEAM, alice.user)  # her link is gone; her turn still runs as her
    async with env.cached.session(alice) as session:
        names = {t.model_name for t in await session.tools()}
    assert "presto__query_history" not in names
    assert "connect your company account" in session.unavailable["io.example/presto"]
    async with env.cached.session(bob) as session:
        names = {t.model_name for t in await session.tools()}
    assert "presto__query_history" in names, session.unavailable
    assert not env.cached.breaker.is_open("io.example/presto")
