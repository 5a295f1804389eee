"""Through the gateway, a server with its own authorization server gets each person's own token for it, and
only that; a person who has not connected it is asked to, and the server hears nothing from them till then."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace

import pytest
import redis.asyncio as aioredis

from fixtures.own_as_mcp import ThirdPartyServer
from mcp_clients.gateway import Breaker, Caller, Gateway, ToolOutcome
from mcp_clients.listing import ListingCache
from mcp_clients.sealing import Sealer
from mcp_clients.server_oauth import CALLBACK_PATH, PerServerAuth
from mcp_clients.server_oauth_errors import ConnectNeeded
from registry_cache.model import ServerEntry
from tests.mcp_clients.conftest import PUBLIC_URL, Env
from tests.mcp_clients.oauth_world import TEAM, connect, follow, oauth_entry, raw_entry

NAME = "io.example/tickets"


@dataclass
class OAuthEnv:
    env: Env
    server: ThirdPartyServer
    auth: PerServerAuth
    gateway: Gateway
    entry: ServerEntry  # as the registry has it


@pytest.fixture
def tickets() -> Iterator[ThirdPartyServer]:
    with ThirdPartyServer() as server:
        yield server


@pytest.fixture
async def oauth(env: Env, tickets: ThirdPartyServer, aredis: aioredis.Redis) -> AsyncIterator[OAuthEnv]:
    tickets.auth.add_client("chatops", "svc-secret", "client_secret_basic", [PUBLIC_URL + CALLBACK_PATH])
    client = {"client_id": "chatops", "client_secret_env": "CHATOPS_OAUTH_TICKETS_SECRET"}
    tools = {"write_ticket": {"approval": "never"}}
    env.world.registry.add(raw_entry(tickets, NAME, oauth_client=client, tools=tools))
    entry = oauth_entry(tickets, NAME, oauth_client=client, tools=tools)
    sealer = Sealer([env.world.secret_key])
    auth = PerServerAuth(
        aredis,
        sealer,
        public_url=PUBLIC_URL,
        snapshot=env.gateway.snapshot,
        broker=env.broker,
        environ={"CHATOPS_OAUTH_TICKETS_SECRET": "svc-secret"},
    )
    gateway = Gateway(env.gateway.snapshot, env.broker, breaker=Breaker(), server_auth=auth)
    yield OAuthEnv(env, tickets, auth, gateway, entry)
    await auth.aclose()


async def test_a_person_who_has_not_connected_is_asked_to_and_nothing_reaches_the_server(
    oauth: OAuthEnv,
) -> None:
    async with oauth.gateway.session(await oauth.env.caller("alice")) as session:
        names = {t.model_name for t in await session.tools()}
        outcome = await session.call("tickets__whoami", {})
    assert not any(n.startswith("tickets__") for n in names)
    assert "presto__query_history" in names  # every other server as usual
    assert session.unavailable[NAME].startswith("connect tickets first")
    assert isinstance(session.connect_needed[NAME], ConnectNeeded)
    assert session.connect_needed[NAME].short_name == "tickets"
    assert not outcome.ok
    assert oauth.server.seen == []
    assert oauth.server.auth.requests() == []


async def test_connecting_by_name_needs_a_linked_person_the_registry_lets_use_it(oauth: OAuthEnv) -> None:
    caller = await oauth.env.caller("alice")
    url = await oauth.auth.authorization_url(TEAM, caller.user, "tickets", browser="b")
    assert url.startswith(oauth.server.auth.issuer + "/authorize?")
    with pytest.raises(Exception, match="connect your company account"):
        await oauth.auth.authorization_url(TEAM, "U0NOBODY", "tickets", browser="b")
    with pytest.raises(Exception, match="not a server you connect"):
        await oauth.auth.authorization_url(TEAM, caller.user, "presto", browser="b")
    oauth.env.world.registry.patch_governance(NAME, {"allowed_groups": ["finance"]})
    await oauth.env.gateway.snapshot.refresh_now()
    with pytest.raises(Exception, match="open to finance"):
        await oauth.auth.authorization_url(TEAM, caller.user, "tickets", browser="b")


async def test_each_persons_calls_carry_their_own_token_for_it_and_no_other_server_sees_one(
    oauth: OAuthEnv,
) -> None:
    alice, bob = await oauth.env.caller("alice"), await oauth.env.caller("bob")
    oauth.server.auth.user = "alice@tickets"
    await connect(oauth.auth, oauth.entry, alice.user)
    async with oauth.gateway.session(alice) as session:
        await session.tools()
        mine = await session.call("tickets__whoami", {})
        history = await session.call("presto__query_history", {"limit": 1})
    assert mine.ok, mine.text
    assert "alice@tickets" in mine.text
    assert history.ok, history.text
    async with oauth.gateway.session(bob) as session:  # alice's connection is hers alone
        names = {t.model_name for t in await session.tools()}
    assert "tickets__whoami" not in names
    assert NAME in session.connect_needed
    issued = oauth.server.auth.tokens
    seen = [h for h in oauth.server.authorizations() if h]
    assert seen
    assert all(h.removeprefix("Bearer ") in issued for h in seen)  # only its own authorization server's
    assert {issued[h.removeprefix("Bearer ")].sub for h in seen} == {"alice@tickets"}
    for server in oauth.env.world.servers.values():
        for request in server.record.all():
            assert request.authorization is None or not request.authorization.startswith("Bearer own-")


async def test_a_remembered_listing_is_never_shown_to_someone_who_has_not_connected(
    oauth: OAuthEnv, aredis: aioredis.Redis
) -> None:
    cached = Gateway(
        oauth.gateway.snapshot,
        oauth.env.broker,
        breaker=Breaker(),
        listings=ListingCache(aredis),
        server_auth=oauth.auth,
    )
    alice, bob = await oauth.env.caller("alice"), await oauth.env.caller("bob")
    await connect(oauth.auth, oauth.entry, alice.user)
    async with cached.session(alice) as session:
        assert "tickets__whoami" in {t.model_name for t in await session.tools()}
    async with cached.session(bob) as session:
        assert "tickets__whoami" not in {t.model_name for t in await session.tools()}
    # What alice's account was shown is remembered as hers: someone else's account may be shown other tools.
    assert await aredis.exists(ListingCache.key(NAME, oauth.server.url, alice.identity.sub))
    assert not await aredis.exists(ListingCache.key(NAME, oauth.server.url, "oauth"))


async def test_a_call_needing_more_scope_asks_the_person_to_grant_it_then_runs(oauth: OAuthEnv) -> None:
    alice = await oauth.env.caller("alice")
    await connect(oauth.auth, oauth.entry, alice.user)
    async with oauth.gateway.session(alice) as session:
        await session.tools()
        refused = await session.call("tickets__write_ticket", {"title": "disk full"})
    assert not refused.ok
    assert refused.error_kind == "connect"
    assert session.connect_needed[NAME].step_up
    url = await oauth.auth.authorization_url(TEAM, alice.user, "tickets", browser="b")
    back = await follow(url)
    assert "tickets:write" in (await oauth.auth.finish(back["state"], back["code"], None, browser="b")).scope
    async with oauth.gateway.session(alice) as session:
        await session.tools()
        filed = await session.call("tickets__write_ticket", {"title": "disk full"})
    assert filed.ok, filed.text
    assert "filed disk full" in filed.text
    assert not oauth.gateway.breaker.is_open(NAME)


async def whoami_after(oauth: OAuthEnv, meanwhile: Callable[[], None]) -> tuple[Caller, ToolOutcome]:
    """alice connects and lists; then `meanwhile` happens at the server; then she calls whoami."""
    alice = await oauth.env.caller("alice")
    await connect(oauth.auth, oauth.entry, alice.user)
    async with oauth.gateway.session(alice) as session:
        await session.tools()
        meanwhile()
        return alice, await session.call("tickets__whoami", {})


async def test_a_connection_the_server_ended_asks_to_connect_again_without_counting_against_it(
    oauth: OAuthEnv,
) -> None:
    def forget_everything() -> None:  # the server forgot every token and refresh grant it issued
        oauth.server.auth.tokens.clear()
        oauth.server.auth._refresh.clear()

    alice, outcome = await whoami_after(oauth, forget_everything)
    assert outcome.error_kind == "connect"
    assert "connect tickets" in outcome.text
    assert not await oauth.auth.connected(TEAM, alice.user, oauth.entry)


async def test_a_server_that_refuses_even_a_fresh_token_asks_to_connect_again_after_one_refresh(
    oauth: OAuthEnv,
) -> None:
    def refuse_every_token() -> None:
        oauth.server.knobs.refuse_tokens = True

    alice, outcome = await whoami_after(oauth, refuse_every_token)
    assert outcome.error_kind == "connect"
    assert "no longer accepts your connection" in outcome.text
    refreshes = [
        r for r in oauth.server.auth.requests("token") if r.params.get("grant_type") == "refresh_token"
    ]
    assert len(refreshes) == 1
    assert not await oauth.auth.connected(TEAM, alice.user, oauth.entry)


async def test_a_workflow_without_a_person_uses_the_pre_registered_clients_own_token(oauth: OAuthEnv) -> None:
    service = await oauth.env.caller("alice")
    async with oauth.gateway.session(replace(service, service=True)) as session:
        await session.tools()
        outcome = await session.call("tickets__whoami", {})
    assert outcome.ok, outcome.text
    assert "chatops" in outcome.text  # the client itself, not a person
    grants = [
        r for r in oauth.server.auth.requests("token") if r.params.get("grant_type") == "client_credentials"
    ]
    assert len(grants) == 1
    assert grants[0].params["resource"] == oauth.server.url
    assert grants[0].basic_auth == "chatops"
