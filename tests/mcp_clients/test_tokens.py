"""One token per (person, server), from a strict provider, serialized and sealed (SPEC §5)."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from fixtures.waiting import wait_until
from flows.linking import LinkFailed
from mcp_clients.tokens import Audience, NotLinked, ReconnectNeeded, TokenBroker
from tests.mcp_clients.conftest import BROWSER, TEAM, IdentityWorld

NEW_URL = "http://127.0.0.1:9999/new-server/mcp"


def claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


async def test_linking_asks_for_every_usable_user_server_and_exchanges_naming_one(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    await w.link("alice")
    identity = await w.broker.identity(TEAM, "U0ALICE")
    assert identity is not None
    assert (identity.sub, identity.email) == ("u-alice", "alice@example.com")
    assert identity.groups == {"data-eng", "presto-oncall"}
    authorize = w.idp.requests("/authorize")[-1]
    expected = {
        w.resources[n] for n in ("PRESTO_URL", "SPARK_URL", "AIRFLOW_URL", "LEDGER_URL", "SEARCH_URL")
    }
    assert set(authorize.resources) == expected  # statuspage is auth none, hive is suspended
    assert authorize.code_challenge_method == "S256"
    assert authorize.param("prompt") == "consent"
    assert "offline_access" in (authorize.param("scope") or "")
    exchange = [r for r in w.idp.requests("/token") if r.grant_type == "authorization_code"][-1]
    assert len(exchange.resources) == 1
    assert exchange.has_code_verifier


async def test_a_token_is_issued_to_this_person_for_this_server_and_cached(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    await w.link("alice")
    presto, spark = w.resources["PRESTO_URL"], w.resources["SPARK_URL"]
    token = await w.broker.user_token(TEAM, "U0ALICE", w.audience("PRESTO_URL"))
    assert (claims(token)["aud"], claims(token)["sub"]) == (presto, "u-alice")
    assert claims(await w.broker.user_token(TEAM, "U0ALICE", w.audience("SPARK_URL")))["aud"] == spark
    refreshes = len([r for r in w.idp.requests("/token") if r.grant_type == "refresh_token"])
    assert await w.broker.user_token(TEAM, "U0ALICE", w.audience("PRESTO_URL")) == token
    assert len([r for r in w.idp.requests("/token") if r.grant_type == "refresh_token"]) == refreshes
    for request in w.idp.requests("/token"):
        if request.grant_type == "refresh_token":
            assert len(request.resources) == 1


async def test_ten_concurrent_calls_with_an_expired_token_make_one_refresh(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    await w.link("alice")
    before = w.idp.counters().get("token.refresh_token.ok", 0)
    tokens = await asyncio.gather(
        *(w.broker.user_token(TEAM, "U0ALICE", w.audience("PRESTO_URL")) for _ in range(10))
    )
    assert len(set(tokens)) == 1
    assert w.idp.counters().get("token.refresh_token.ok", 0) - before == 1
    assert w.idp.counters().get("family.revoked", 0) == 0
    # The rotated refresh token was kept: a later refresh for another server still works.
    await w.broker.user_token(TEAM, "U0ALICE", w.audience("AIRFLOW_URL"))
    assert w.idp.counters().get("family.revoked", 0) == 0


async def test_a_token_request_slower_than_the_lock_still_makes_one_refresh_across_processes(
    identity_world: IdentityWorld,
) -> None:
    """The refresh lock outlives the request it guards: with a 1-second lock and a provider that takes 2.5 s,
    a second process waits for the first instead of refreshing with the same (rotating) refresh token, which
    the provider would take for a stolen token and answer by revoking the person's whole family."""
    w = identity_world
    await w.link("alice")
    one, other = (TokenBroker(w.broker._redis, w.provider, w.broker._sealer, lock_seconds=1) for _ in "ab")
    w.idp.fail_next(1, error=None, delay=2.5, grant_type="refresh_token")  # slow, then answers
    before = w.idp.counters().get("token.refresh_token.ok", 0)
    first = asyncio.create_task(one.user_token(TEAM, "U0ALICE", w.audience("PRESTO_URL")))
    reached = lambda: w.idp.counters().get("fault.injected")  # noqa: E731  (the slow request has begun)
    await asyncio.to_thread(wait_until, "the first refresh to reach the provider", reached)
    second = await asyncio.wait_for(other.user_token(TEAM, "U0ALICE", w.audience("PRESTO_URL")), 20)
    assert await asyncio.wait_for(first, 20) == second
    assert w.idp.counters().get("token.refresh_token.ok", 0) - before == 1
    assert w.idp.counters().get("family.revoked", 0) == 0
    assert claims(await other.user_token(TEAM, "U0ALICE", w.audience("SPARK_URL")))["sub"] == "u-alice"


async def test_a_refresh_ciphertext_copied_into_another_record_is_rejected(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    await w.link("alice")
    await w.link("bob")
    redis = w.broker._redis
    alice_sealed = await redis.hget(f"chatops:link:{TEAM}:U0ALICE", "refresh")
    await redis.hset(f"chatops:link:{TEAM}:U0BOB", "refresh", alice_sealed)
    with pytest.raises(ReconnectNeeded):
        await w.broker.user_token(TEAM, "U0BOB", w.audience("PRESTO_URL"))
    assert await w.broker.identity(TEAM, "U0BOB") is None  # the broken link is gone, not half-used
    # Alice's own token was never issued on Bob's behalf.
    assert all(r.user != "alice" for r in w.idp.requests("/token") if r.grant_type == "refresh_token")


async def test_a_server_added_after_linking_asks_the_person_to_connect_again(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    await w.link("alice")
    with pytest.raises(ReconnectNeeded, match="invalid_target"):
        await w.broker.user_token(TEAM, "U0ALICE", Audience("io.example/new", NEW_URL, NEW_URL))
    with pytest.raises(NotLinked):
        await w.broker.user_token(TEAM, "U0ALICE", w.audience("PRESTO_URL"))


async def test_a_revoked_link_never_falls_back_to_another_identity(identity_world: IdentityWorld) -> None:
    w = identity_world
    await w.link("alice")
    await w.link("bob")
    w.idp.revoke_user("alice")
    with pytest.raises(ReconnectNeeded):
        await w.broker.user_token(TEAM, "U0ALICE", w.audience("PRESTO_URL"))
    assert claims(await w.broker.user_token(TEAM, "U0BOB", w.audience("PRESTO_URL")))["sub"] == "u-bob"


async def test_groups_are_reread_through_a_refresh_when_too_old(identity_world: IdentityWorld) -> None:
    w = identity_world
    await w.link("carol")
    w.idp.set_groups("carol", ["data-eng"])
    fresh = await w.broker.current_identity(TEAM, "U0CAROL")
    assert "presto-oncall" in fresh.groups  # read at linking, younger than 5 minutes
    reread = await w.broker.current_identity(TEAM, "U0CAROL", max_age=0)
    assert reread.groups == {"data-eng"}


async def test_service_identity_uses_client_credentials_with_resource(identity_world: IdentityWorld) -> None:
    w = identity_world
    token = await w.broker.service_token(w.audience("STATUSPAGE_URL"))
    assert claims(token)["aud"] == w.resources["STATUSPAGE_URL"]
    assert claims(token)["sub"] == "svc:chatops-bot"
    request = w.idp.requests("/token")[-1]
    assert (request.grant_type, request.resources) == ("client_credentials", (w.resources["STATUSPAGE_URL"],))


async def test_refresh_tokens_at_rest_are_fernet_ciphertext(identity_world: IdentityWorld) -> None:
    w = identity_world
    await w.link("alice")
    stored = await w.broker._redis.hgetall(f"chatops:link:{TEAM}:U0ALICE")
    assert stored[b"refresh"].startswith(b"gAAAAA")
    assert not any(value.startswith(b"ey") for value in stored.values())


async def test_state_is_single_use_and_iss_must_match(identity_world: IdentityWorld) -> None:
    w = identity_world
    offer = (await w.linking.offer(TEAM, "U0ALICE")).rsplit("/", 1)[1]
    url = await w.linking.start(offer, browser=BROWSER)
    state = dict(__import__("httpx2").URL(url).params)["state"]
    with pytest.raises(LinkFailed, match="unexpected identity provider"):
        await w.linking.finish(
            state=state, code="x", iss="https://evil.example.com", error=None, browser=BROWSER
        )
    with pytest.raises(LinkFailed, match="already used"):
        await w.linking.finish(state=state, code="x", iss=None, error=None, browser=BROWSER)
    with pytest.raises(LinkFailed, match="expired"):
        await w.linking.start("no-such-offer", browser=BROWSER)


async def test_linking_asks_for_no_resource_that_two_servers_claim(identity_world: IdentityWorld) -> None:
    w = identity_world
    collector = w.registry.entry("io.example/presto")
    collector["server"]["name"] = "com.evil/collector"
    collector["server"]["remotes"] = [{"type": "streamable-http", "url": "http://127.0.0.1:9/collector/mcp"}]
    w.registry.add(collector)  # its governance still claims presto's resource
    await w.link("alice")
    authorize = w.idp.requests("/authorize")[-1]
    assert w.resources["PRESTO_URL"] not in authorize.resources
    assert set(authorize.resources) == {
        w.resources[n] for n in ("SPARK_URL", "AIRFLOW_URL", "LEDGER_URL", "SEARCH_URL")
    }


async def test_a_cached_token_is_found_again_only_for_the_server_name_and_url_it_was_obtained_for(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    await w.link("alice")
    presto = w.audience("PRESTO_URL")
    token = await w.broker.user_token(TEAM, "U0ALICE", presto)
    moved = Audience(presto.server, presto.url.replace("127.0.0.1", "localhost"), presto.resource)
    renamed = Audience("io.example/presto-v2", presto.url, presto.resource)
    for elsewhere in (moved, renamed):
        other = await w.broker.user_token(TEAM, "U0ALICE", elsewhere)
        assert other != token
        assert claims(other)["aud"] == presto.resource  # obtained afresh, for the same audience
    assert await w.broker.user_token(TEAM, "U0ALICE", presto) == token  # its own stays cached


async def test_a_cached_token_copied_under_another_servers_key_does_not_open(
    identity_world: IdentityWorld,
) -> None:
    w = identity_world
    await w.link("alice")
    presto, spark = w.audience("PRESTO_URL"), w.audience("SPARK_URL")
    presto_token = await w.broker.user_token(TEAM, "U0ALICE", presto)
    redis = w.broker._redis
    await redis.set(
        f"chatops:tok:{TEAM}:U0ALICE:{spark.digest}",
        await redis.get(f"chatops:tok:{TEAM}:U0ALICE:{presto.digest}"),
    )
    token = await w.broker.user_token(TEAM, "U0ALICE", spark)
    assert token != presto_token
    assert claims(token)["aud"] == spark.resource
