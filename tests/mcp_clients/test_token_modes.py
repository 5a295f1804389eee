"""Providers differ (SPEC §3, §5): the scopes asked at linking, per-server tokens by `resource`, by `scope`
(Entra ID's api://…/.default) or by exchange (RFC 8693), groups re-read from the provider itself, and
Disconnect revoking the refresh token (RFC 7009)."""

from __future__ import annotations

import time
from dataclasses import replace

import jwt
import pytest

from fixtures.idp import CLIENT_ID, DEFAULT_CLIENT_SECRET
from flows.linking import Linking
from mcp_clients.claims import ClaimPaths
from mcp_clients.person import identify
from mcp_clients.provider import Provider, ProviderError, TokenResponse
from tests.mcp_clients.conftest import TEAM, Env, IdentityWorld, link_in_browser

ENTRA_SCOPE = "api://presto-app/.default"
GOV = "dev.chatops/governance"


def claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def refreshes(w: IdentityWorld) -> list[tuple[tuple[str, ...], str | None]]:
    return [(r.resources, r.scope) for r in w.idp.requests("/token") if r.grant_type == "refresh_token"]


async def test_linking_asks_for_the_groups_scope_the_provider_lists(identity_world: IdentityWorld) -> None:
    w = identity_world
    await w.link("alice")
    scope = (w.idp.requests("/authorize")[-1].param("scope") or "").split()
    assert scope == ["openid", "email", "profile", "offline_access", "groups"]  # FakeIdP lists "groups"


async def test_oauth_scopes_replaces_the_default_scope(identity_world: IdentityWorld) -> None:
    w = identity_world
    provider = Provider(
        w.http, w.idp.issuer, CLIENT_ID, DEFAULT_CLIENT_SECRET, scopes="openid offline_access"
    )
    linking = Linking(
        w.broker._redis,
        provider,
        w.broker,
        w.snapshot,
        people=w.linking._people,
        sealer=w.broker._sealer,
        public_url="http://127.0.0.1:1",
    )
    await link_in_browser(linking, w.idp, "alice", "U0ALICE")
    assert w.idp.requests("/authorize")[-1].param("scope") == "openid offline_access"


async def test_a_scope_server_gets_its_token_by_scope_without_a_resource(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    await w.link("alice")
    presto = w.audience("PRESTO_URL")
    entra = replace(presto, token="scope", scope=ENTRA_SCOPE)
    token = await w.broker.user_token(TEAM, "U0ALICE", entra)
    assert (claims(token)["aud"], claims(token)["sub"]) == ("api://presto-app", "u-alice")
    assert refreshes(w)[-1] == ((), ENTRA_SCOPE)
    assert await w.broker.user_token(TEAM, "U0ALICE", entra) == token  # cached for that audience
    by_resource = await w.broker.user_token(TEAM, "U0ALICE", presto)
    assert by_resource != token  # the same server asked by resource is another token
    assert claims(by_resource)["aud"] == presto.resource


async def test_an_exchange_server_gets_the_persons_own_token_exchanged_for_its_audience(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    await w.link("bob")
    presto = w.audience("PRESTO_URL")
    exchanged = replace(presto, token="exchange")
    token = await w.broker.user_token(TEAM, "U0BOB", exchanged)
    assert (claims(token)["aud"], claims(token)["sub"]) == (presto.resource, "u-bob")
    own, exchange = w.idp.requests("/token")[-2:]
    assert (own.grant_type, own.resources) == ("refresh_token", ())  # a token for the provider itself
    assert exchange.grant_type == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert (exchange.param("audience"), exchange.status) == (presto.resource, 200)
    subject = claims(exchange.param("subject_token") or "")
    assert (subject["aud"], subject["sub"]) == (CLIENT_ID, "u-bob")  # never another server's token
    assert w.idp.counters().get("family.revoked", 0) == 0  # the rotated refresh token was kept


async def test_linking_asks_no_resource_for_servers_whose_tokens_come_by_scope_or_exchange(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    w.registry.patch_governance("io.example/presto", {"token": "scope", "scope": ENTRA_SCOPE})
    w.registry.patch_governance("io.example/spark", {"token": "exchange"})
    await w.link("alice")
    asked = set(w.idp.requests("/authorize")[-1].resources)
    assert asked == {w.resources[n] for n in ("AIRFLOW_URL", "LEDGER_URL", "SEARCH_URL")}


async def test_a_scope_server_without_a_scope_is_unusable_with_the_reason(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    w.registry.patch_governance("io.example/presto", {"token": "scope"})
    view = await w.snapshot.view()
    assert "io.example/presto" not in {e.name for e in view.entries}
    assert any(
        "token: scope needs a scope" in s.reason for s in view.skipped if s.name == "io.example/presto"
    )


async def test_groups_are_reread_from_the_provider_itself_even_for_a_link_without_servers(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    for name in ("presto", "spark", "airflow", "ledger", "search-logs"):
        w.registry.set_governance_status(f"io.example/{name}", "suspended")
    await w.link("carol")
    identity = await w.broker.identity(TEAM, "U0CAROL")
    assert identity is not None
    assert identity.resources == ()
    w.idp.set_groups("carol", ["data-eng"])
    reread = await w.broker.current_identity(TEAM, "U0CAROL", max_age=0)
    assert reread.groups == {"data-eng"}
    assert refreshes(w)[-1] == ((), None)


async def test_disconnect_revokes_the_refresh_token_at_the_provider(identity_world: IdentityWorld) -> None:
    w = identity_world
    await w.link("alice")
    assert await w.broker.disconnect(TEAM, "U0ALICE") == "revoked"
    assert await w.broker.identity(TEAM, "U0ALICE") is None
    [family] = w.idp.families("alice")
    assert family.revoked_reason == "revoked by the client"
    revoke = w.idp.requests("/revoke")[-1]
    assert (revoke.auth_method, revoke.param("token_type_hint"), revoke.status) == (
        "client_secret_basic",
        "refresh_token",
        200,
    )


async def test_disconnect_at_a_provider_without_revocation_only_forgets(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    w.idp.set_revocation(False)
    await w.link("alice")
    fresh = Provider(w.http, w.idp.issuer, CLIENT_ID, DEFAULT_CLIENT_SECRET)  # reads the metadata anew
    broker = type(w.broker)(w.broker._redis, fresh, w.broker._sealer)
    assert await broker.disconnect(TEAM, "U0ALICE") == "unsupported"
    assert await broker.identity(TEAM, "U0ALICE") is None
    assert w.idp.requests("/revoke") == []
    assert await broker.disconnect(TEAM, "U0ALICE") == "nothing"


async def test_a_server_whose_tokens_come_by_exchange_receives_only_its_own(env: Env) -> None:
    env.world.registry.patch_governance("io.example/presto", {"token": "exchange"})
    async with env.gateway.session(await env.caller("alice")) as session:
        await session.tools()
        outcome = await session.call("presto__query_history", {"limit": 1})
    assert outcome.ok, outcome.text
    presto = env.world.servers["presto"]
    tokens = {r.authorization for r in presto.record.all() if r.authorization}
    assert tokens
    for authorization in tokens:
        assert authorization is not None
        token = claims(authorization.removeprefix("Bearer "))
        assert (token["aud"], token["sub"]) == (presto.resource, "u-alice")
    exchanges = [r for r in env.world.idp.requests("/token") if r.grant_type and "exchange" in r.grant_type]
    assert exchanges
    assert all(r.status == 200 for r in exchanges)


async def test_an_id_token_and_an_access_token_naming_different_people_identify_nobody(
    identity_world: IdentityWorld,
) -> None:
    """Claims are gathered from several places only when every one of them speaks for the same `sub`."""
    w = identity_world
    # Groups are looked for in `roles`, which the ID token lacks: the access token is consulted too.
    provider = Provider(
        w.http, w.idp.issuer, CLIENT_ID, DEFAULT_CLIENT_SECRET, claims=ClaimPaths(groups="roles")
    )
    alice, bob = (w.idp.mint_access_token(p, CLIENT_ID) for p in ("alice", "bob"))
    mixed = TokenResponse(bob, time.time() + 300, refresh_token=None, id_token=alice, scope="openid")
    with pytest.raises(ProviderError, match="different people"):
        await identify(provider, mixed, for_provider=True)
    same = TokenResponse(alice, time.time() + 300, refresh_token=None, id_token=alice, scope="openid")
    who = await identify(provider, same, for_provider=True)
    assert (who.claims.sub, who.claims.email, who.claims.has_groups) == (
        "u-alice",
        "alice@example.com",
        False,
    )
