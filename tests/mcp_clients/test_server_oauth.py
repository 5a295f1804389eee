"""A person connects a server that has its own authorization server, and the bot keeps and uses that token."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from fixtures.own_as_mcp import ThirdPartyServer
from mcp_clients.sealing import Sealer
from mcp_clients.server_oauth import CALLBACK_PATH, PerServerAuth, audience_of
from mcp_clients.server_oauth_clients import ClientRegistry
from mcp_clients.server_oauth_discovery import Challenge
from mcp_clients.server_oauth_errors import ConnectFailed, ConnectNeeded, ServerAuthError, StepUpRefused
from registry_cache.model import ServerEntry, parse_entries
from tests.mcp_clients.oauth_world import BROWSER, TEAM, connect, follow, oauth_entry, raw_entry

PUBLIC_URL = "http://127.0.0.1:3000"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[ThirdPartyServer]:
    with ThirdPartyServer() as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def auth(aredis: aioredis.Redis, clock: Clock) -> AsyncIterator[PerServerAuth]:
    per_server = PerServerAuth(
        aredis, Sealer([Fernet.generate_key().decode()]), public_url=PUBLIC_URL, clock=clock
    )
    yield per_server
    await per_server.aclose()


async def everything_in(redis: aioredis.Redis) -> bytes:
    dump = b""
    async for key in redis.scan_iter(count=500):
        kind = await redis.type(key)
        if kind == b"string":
            dump += key + b"=" + (await redis.get(key) or b"") + b"\n"
        elif kind == b"hash":
            dump += key + b"=" + repr(await redis.hgetall(key)).encode() + b"\n"
    return dump


async def test_connecting_asks_with_pkce_s256_and_the_resource_and_keeps_the_token_sealed(
    server: ThirdPartyServer, auth: PerServerAuth, aredis: aioredis.Redis
) -> None:
    entry = oauth_entry(server)
    url = await auth.authorize(TEAM, "U0ALICE", entry, browser=BROWSER)
    asked = dict(httpx2.URL(url).params)
    assert asked["code_challenge_method"] == "S256"
    assert len(asked["code_challenge"]) >= 43
    assert asked["resource"] == server.url
    assert asked["redirect_uri"] == PUBLIC_URL + CALLBACK_PATH
    back = await follow(url)
    connected = await auth.finish(back["state"], back["code"], None, browser=BROWSER)
    assert (connected.team, connected.user, connected.server) == (TEAM, "U0ALICE", "io.example/tickets")
    token = await auth.token(TEAM, "U0ALICE", entry)
    assert server.auth.tokens[token].sub == "alice"
    exchange = server.auth.requests("token")[-1].params
    assert exchange["resource"] == server.url
    assert exchange["code_verifier"]
    assert token.encode() not in await everything_in(aredis)  # sealed at rest


async def test_resource_is_on_every_authorization_and_token_request_refreshes_included(
    server: ThirdPartyServer, auth: PerServerAuth, clock: Clock
) -> None:
    entry = oauth_entry(server)
    await connect(auth, entry, "U0ALICE")
    first = await auth.token(TEAM, "U0ALICE", entry)
    clock.now += 3700  # past the access token's lifetime
    second = await auth.token(TEAM, "U0ALICE", entry)
    assert second != first
    assert server.auth.tokens[second].sub == "alice"
    requests = server.auth.requests("authorize") + server.auth.requests("token")
    assert [r.params.get("grant_type") for r in server.auth.requests("token")] == [
        "authorization_code",
        "refresh_token",
    ]
    assert {r.params.get("resource") for r in requests} == {server.url}


async def test_rotated_refresh_tokens_keep_working_and_a_refused_refresh_asks_to_connect_again(
    server: ThirdPartyServer, auth: PerServerAuth, clock: Clock
) -> None:
    entry = oauth_entry(server)
    await connect(auth, entry, "U0ALICE")
    for _ in range(3):  # each refresh spends the refresh token it used (the server rotates them)
        clock.now += 3700
        assert server.auth.tokens[await auth.token(TEAM, "U0ALICE", entry)].sub == "alice"
    server.auth._refresh.clear()  # the grant was revoked at the server
    clock.now += 3700
    with pytest.raises(ConnectNeeded, match="connect tickets"):
        await auth.token(TEAM, "U0ALICE", entry)
    assert not await auth.connected(TEAM, "U0ALICE", entry)


def pre_registered(
    server: ThirdPartyServer, redis: aioredis.Redis, secret: str
) -> tuple[ServerEntry, PerServerAuth]:
    """The bot pre-registered at the server's authorization server, its secret in an environment variable."""
    server.auth.add_client("chatops-at-tickets", secret, "client_secret_basic", [PUBLIC_URL + CALLBACK_PATH])
    client = {"client_id": "chatops-at-tickets", "client_secret_env": "CHATOPS_OAUTH_TICKETS_SECRET"}
    sealer = Sealer([Fernet.generate_key().decode()])
    auth = PerServerAuth(
        redis, sealer, public_url=PUBLIC_URL, environ={"CHATOPS_OAUTH_TICKETS_SECRET": secret}
    )
    return oauth_entry(server, oauth_client=client), auth


async def test_pre_registered_credentials_come_first_and_their_secret_stays_in_the_environment(
    server: ThirdPartyServer, aredis: aioredis.Redis
) -> None:
    entry, auth = pre_registered(server, aredis, "s3cret-from-env")
    try:
        await connect(auth, entry, "U0ALICE")
        assert server.auth.requests("register") == []
        assert server.auth.requests("token")[-1].basic_auth == "chatops-at-tickets"
        assert b"s3cret-from-env" not in await everything_in(aredis)
    finally:
        await auth.aclose()


def test_a_literal_secret_in_the_registry_skips_the_entry(server: ThirdPartyServer) -> None:
    literal = raw_entry(server, oauth_client={"client_id": "x", "client_secret": "literal"})
    entries, skipped = parse_entries([literal])
    assert entries == []
    assert "oauth_client.client_secret" in skipped[0].reason
    named = raw_entry(server, oauth_client={"client_id": "x", "client_secret_env": "not a name; rm -rf"})
    assert parse_entries([named])[0] == []


@pytest.mark.parametrize("variable", ["SLACK_BOT_TOKEN", "CHATOPS_SECRET_KEY", "OAUTH_CLIENT_SECRET"])
def test_an_entry_cannot_name_the_bots_own_secrets_as_its_client_secret(
    server: ThirdPartyServer, variable: str
) -> None:
    """A hostile entry naming one of the bot's own variables would have the bot send that secret to an
    authorization server the entry chooses: only CHATOPS_OAUTH_* variables may be named."""
    for field in ("client_secret_env", "private_key_env"):
        hostile = raw_entry(server, oauth_client={"client_id": "x", field: variable})
        entries, skipped = parse_entries([hostile])
        assert entries == []
        assert f"oauth_client.{field}" in skipped[0].reason


def test_two_entries_naming_one_client_secret_variable_are_both_unusable(server: ThirdPartyServer) -> None:
    """One variable serves one server: a second entry naming it could send it to its own issuer."""
    client = {"client_id": "x", "client_secret_env": "CHATOPS_OAUTH_TICKETS_SECRET"}
    first = raw_entry(server, "io.example/tickets", oauth_client=client)
    second = raw_entry(server, "io.evil/lookalike", oauth_client=client, resource="https://evil.example/mcp")
    entries, skipped = parse_entries([first, second])
    assert entries == []
    assert {s.name for s in skipped} == {"io.example/tickets", "io.evil/lookalike"}
    assert all("client secret variable CHATOPS_OAUTH_TICKETS_SECRET" in s.reason for s in skipped)


async def test_a_client_id_metadata_document_is_the_client_where_the_server_reads_them_over_https(
    server: ThirdPartyServer, aredis: aioredis.Redis, auth: PerServerAuth
) -> None:
    server.auth.knobs.cimd = True
    entry = oauth_entry(server)
    https = PerServerAuth(
        aredis, Sealer([Fernet.generate_key().decode()]), public_url="https://chatops.example.com"
    )
    try:
        asked = dict(httpx2.URL(await https.authorize(TEAM, "U0ALICE", entry, browser=BROWSER)).params)
        assert asked["client_id"] == "https://chatops.example.com/oauth/client-metadata.json"
        assert server.auth.requests("register") == []
    finally:
        await https.aclose()
    # Over plain http there is no document a server could fetch: the bot registers instead.
    asked = dict(httpx2.URL(await auth.authorize(TEAM, "U0ALICE", entry, browser=BROWSER)).params)
    assert asked["client_id"].startswith("dcr-")
    assert len(server.auth.requests("register")) == 1
    assert server.auth.requests("register")[0].params["application_type"] == "native"


async def test_a_dynamic_registration_is_made_once_per_issuer_and_never_used_at_another(
    server: ThirdPartyServer, auth: PerServerAuth, aredis: aioredis.Redis
) -> None:
    entry = oauth_entry(server)
    await connect(auth, entry, "U0ALICE")
    await connect(auth, entry, "U0BOB")
    assert len(server.auth.requests("register")) == 1
    with ThirdPartyServer("wiki") as other:
        other_entry = oauth_entry(other, "io.example/wiki")
        # A registration planted under the other issuer's key does not open there: it is sealed to its own.
        keys = [k async for k in aredis.scan_iter(match="chatops:srvclient:*") if not k.endswith(b":lock")]
        planted = await aredis.get(keys[0])
        assert planted is not None
        await aredis.set(ClientRegistry.key(other.auth.issuer), planted)
        asked = dict(httpx2.URL(await auth.authorize(TEAM, "U0ALICE", other_entry, browser=BROWSER)).params)
        assert len(other.auth.requests("register")) == 1
        assert asked["client_id"] in other.auth.clients
        assert asked["client_id"] not in server.auth.clients


async def test_pre_registered_credentials_are_never_sent_to_another_authorization_server(
    server: ThirdPartyServer, aredis: aioredis.Redis
) -> None:
    entry, auth = pre_registered(server, aredis, "s3cret")
    try:
        await connect(auth, entry, "U0ALICE")  # pins the credentials to this server's authorization server
        with ThirdPartyServer("evil") as evil:
            server.knobs.authorization_server = evil.auth.issuer  # its metadata now names another one
            with pytest.raises(ServerAuthError, match="not sent"):
                await auth.authorize(TEAM, "U0BOB", entry, browser=BROWSER)
            assert evil.auth.requests("authorize") == []
            assert evil.auth.requests("token") == []
            bound = oauth_entry(
                server,
                oauth_client={
                    "client_id": "chatops-at-tickets",
                    "client_secret_env": "CHATOPS_OAUTH_TICKETS_SECRET",
                    "issuer": server.auth.issuer,
                },
            )
            with pytest.raises(ServerAuthError, match="not sent"):
                await auth.authorize(TEAM, "U0BOB", bound, browser=BROWSER)
    finally:
        await auth.aclose()


async def test_the_state_is_single_use_bound_to_its_browser_and_expires(
    server: ThirdPartyServer, auth: PerServerAuth, aredis: aioredis.Redis
) -> None:
    entry = oauth_entry(server)
    back = await follow(await auth.authorize(TEAM, "U0ALICE", entry, browser=BROWSER))
    assert 0 < await aredis.ttl(f"chatops:srvstate:{back['state']}") <= 600
    with pytest.raises(ConnectFailed) as refused:
        await auth.finish(back["state"], back["code"], None, browser="someone-elses-browser")
    assert refused.value.reason == "browser_mismatch"
    assert refused.value.user == "U0ALICE"
    with pytest.raises(ConnectFailed) as again:  # the state was spent by the refused attempt
        await auth.finish(back["state"], back["code"], None, browser=BROWSER)
    assert again.value.reason == "state_unknown"
    assert not await auth.connected(TEAM, "U0ALICE", entry)
    assert [r.params.get("grant_type") for r in server.auth.requests("token")] == []


async def test_an_answer_naming_another_issuer_or_none_where_one_is_promised_is_refused(
    server: ThirdPartyServer, auth: PerServerAuth
) -> None:
    entry = oauth_entry(server)
    server.auth.knobs.wrong_iss = True
    with pytest.raises(ConnectFailed) as mixup:
        await connect(auth, entry, "U0ALICE")
    assert mixup.value.reason == "iss_mismatch"
    server.auth.knobs.wrong_iss, server.auth.knobs.iss_parameter = False, True
    back = await follow(await auth.authorize(TEAM, "U0ALICE", entry, browser=BROWSER))
    with pytest.raises(ConnectFailed) as missing:
        await auth.finish(back["state"], back["code"], None, browser=BROWSER)
    assert missing.value.reason == "iss_missing"
    assert await connect(auth, entry, "U0ALICE")  # with its own iss it connects
    assert [r.params.get("grant_type") for r in server.auth.requests("token")] == ["authorization_code"]


async def test_scope_comes_from_the_challenge_else_the_metadata_else_none_plus_offline_access_if_listed(
    server: ThirdPartyServer, auth: PerServerAuth
) -> None:
    entry = oauth_entry(server)

    async def scope() -> str | None:
        return dict(httpx2.URL(await auth.authorize(TEAM, "U0ALICE", entry, browser=BROWSER)).params).get(
            "scope"
        )

    assert await scope() is None
    server.knobs.scopes_supported = ["tickets:read", "tickets:write"]
    assert await scope() == "tickets:read tickets:write"
    server.knobs.challenge_scope = "tickets:read"
    assert await scope() == "tickets:read"
    server.auth.knobs.scopes_supported = ["tickets:read", "offline_access"]
    assert await scope() == "tickets:read offline_access"


async def test_a_server_without_pkce_s256_is_not_connected(
    server: ThirdPartyServer, auth: PerServerAuth
) -> None:
    server.auth.knobs.s256 = False
    with pytest.raises(ServerAuthError, match="S256"):
        await auth.authorize(TEAM, "U0ALICE", oauth_entry(server), browser=BROWSER)
    assert server.auth.requests("authorize") == []
    assert server.auth.requests("register") == []


async def test_step_up_asks_for_the_union_of_scopes_and_stops_after_the_limit(
    server: ThirdPartyServer, auth: PerServerAuth
) -> None:
    server.knobs.challenge_scope = "tickets:read"
    entry = oauth_entry(server)
    assert (await connect(auth, entry, "U0ALICE")).scope == "tickets:read"
    wants_more = Challenge(403, "insufficient_scope", "tickets:write", None)
    needed = await auth.step_up(TEAM, "U0ALICE", entry, wants_more)
    assert needed.step_up
    assert needed.server == "io.example/tickets"
    assert (await connect(auth, entry, "U0ALICE")).scope == "tickets:read tickets:write"
    assert server.auth.tokens[await auth.token(TEAM, "U0ALICE", entry)].scopes == (
        "tickets:read",
        "tickets:write",
    )
    await auth.step_up(TEAM, "U0ALICE", entry, wants_more)
    with pytest.raises(StepUpRefused, match="keeps asking"):
        await auth.step_up(TEAM, "U0ALICE", entry, wants_more)


async def test_a_token_record_copied_to_another_person_or_server_does_not_open(
    server: ThirdPartyServer, auth: PerServerAuth, aredis: aioredis.Redis
) -> None:
    entry = oauth_entry(server)
    await connect(auth, entry, "U0ALICE")
    record = await aredis.get(auth.store.key(TEAM, "U0ALICE", audience_of(entry)))
    assert record is not None
    moved = oauth_entry(server, "io.example/tickets-copy", resource=f"{server.url}")
    await aredis.set(auth.store.key(TEAM, "U0BOB", audience_of(entry)), record)
    await aredis.set(auth.store.key(TEAM, "U0ALICE", audience_of(moved)), record)
    assert not await auth.connected(TEAM, "U0BOB", entry)
    assert not await auth.connected(TEAM, "U0ALICE", moved)
    with pytest.raises(ConnectNeeded):
        await auth.token(TEAM, "U0BOB", entry)
