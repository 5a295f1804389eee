"""A certified OpenID provider as the company's identity provider (issue 17 item 3, SPEC §3, §5).

panva's `oidc-provider` (pinned in interop/package.json, run with the pinned Node 22) replaces the fixture
provider, in three configurations providers come in; each runs the whole flow through the real web app,
Bolt, real Redis and RQ, and the fixture Slack, model and MCP servers (which accept that provider's tokens):

- `groups-scope` (as Okta): groups are released for a `groups` scope, which the bot asks for because the
  provider lists it; they come in the ID token and in the JWT access tokens; client_secret_basic.
- `userinfo-only` (as Keycloak): the issuer has a path (`/realms/chatops`, found by OpenID discovery after
  RFC 8414 path insertion), groups sit at `realm_access.roles` and only the userinfo endpoint gives them;
  the provider accepts only client_secret_post, and the bot picks it from the metadata.
- `namespaced-opaque` (as Auth0): groups in a namespaced claim, opaque access tokens (the MCP servers
  introspect them, RFC 7662), no `jwks_uri` published, so nothing is verifiable by the bot and who a person
  is comes from userinfo; the bot authenticates with private_key_jwt (RFC 7523).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import redis

from approvals.store import Status
from bot.home import HOME_DISCONNECT_ACTION_ID
from bot.preflight import whoami
from bot.settings import Role, load_settings
from bot.web import build_web
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from fixtures.mcp_servers import reseed
from fixtures.npm_peers import PeersMissing
from fixtures.oidc_peer import BOT_CLIENT_ID, OidcConfig, OidcPeer, start_oidc_provider
from fixtures.redis_proc import RedisProc
from fixtures.server import RunningServer, bind_loopback, start
from fixtures.slack import TEAM_ID
from fixtures.slack_ingress import SlackIngress
from fixtures.world import SIGNING_SECRET, World, start_world
from mcp_clients.sealing import Binding, Sealer
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_approvals import ask, kills
from tests.scenarios.test_asking import CHANNEL, answer_text, investigator
from tests.scenarios.test_home import click_home, open_home

CONFIGS = [
    OidcConfig("groups-scope", groups_scope="groups", conform_id_token=False),
    OidcConfig(
        "userinfo-only",
        path="/realms/chatops",
        groups_claim="realm_access.roles",
        groups_scope="profile",
        groups_in_id_token=False,
        client_auth="client_secret_post",
        client_auth_methods=("client_secret_post",),
    ),
    OidcConfig(
        "namespaced-opaque",
        groups_claim="https://chatops.example/groups",
        groups_scope="openid",
        groups_in_id_token=False,
        access_token_format="opaque",
        hide_jwks_uri=True,
        client_auth="private_key_jwt",
        configure_auth_method=True,
    ),
]


@dataclass
class Company:
    op: OidcPeer
    world: World
    web: RunningServer
    redis: RedisProc
    scenario: Scenario


@pytest.fixture(scope="module", params=CONFIGS, ids=[c.name for c in CONFIGS])
def company(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Company]:
    config: OidcConfig = request.param
    sock = bind_loopback()
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        op = start_oidc_provider(
            config, redirect_uri=f"{public_url}/oauth/callback", log_dir=tmp_path_factory.mktemp("op")
        )
    except PeersMissing as exc:  # a failure, not a skip: CI must never pass without its real provider
        sock.close()
        pytest.fail(str(exc), pytrace=False)
    world = start_world(company=op)
    store = RedisProc().start()
    env = world.env(public_url=public_url, redis_url=store.url, oauth=op.bot_env())
    settings = load_settings(Role.WEB_HTTP, env=env)
    bot = whoami(settings)
    web = start(build_web(settings, bot), sock=sock)
    ingress = SlackIngress(web.url, SIGNING_SECRET, slack=world.slack)
    scenario = Scenario(world, settings, env, bot, web, ingress, store.url, login_url=op.login_url)
    try:
        yield Company(op, world, web, store, scenario)
    finally:
        ingress.close()
        web.stop()
        store.stop()
        world.stop()
        op.stop()


@pytest.fixture
def s(company: Company) -> Scenario:
    """The company's scenario, as fresh as the tests of tests/scenarios get theirs (the provider keeps its
    sessions and grants: every test links its people anew)."""
    client = redis.Redis.from_url(company.redis.url)
    client.flushall()
    client.close()
    world = company.world
    world.slack.reset()
    world.anthropic.reset()
    world.registry.reset()
    reseed(world.servers)
    for server in world.servers.values():
        server.record.clear()
        server.knobs.reset()
        server.ledger.reset()
    return company.scenario


def bearer_tokens(s: Scenario, server: str) -> set[str]:
    return {
        r.authorization.removeprefix("Bearer ")
        for r in s.world.servers[server].record.all()
        if r.authorization
    }


def test_mention_link_answer_and_approval_run_with_the_providers_own_tokens(
    company: Company, s: Scenario
) -> None:
    op, config = company.op, company.op.config
    # Mention before linking: the Connect button, the provider's sign-in, then the waiting question answered.
    s.world.anthropic.set_default(investigator)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    assert s.ingress.post(mention).status == 200
    s.work()
    [prompt] = s.world.slack.ephemerals(CHANNEL, user="U0ALICE")
    url = next(e["url"] for b in prompt.blocks or [] if b["type"] == "actions" for e in b["elements"])
    page = s.browse_link("alice", url)
    assert page.status_code == 200, page.text
    assert "alice@example.com" in page.text  # the email came from wherever this provider put it
    s.work()
    assert RUNAWAY_QUERY_ID in answer_text(s, mention.event["ts"])
    linked = s.redis.hgetall(f"chatops:link:{TEAM_ID}:U0ALICE")
    assert json.loads(linked[b"groups"]) == ["data-eng", "presto-oncall"]

    # The approval: two approvers link, one of them with groups older than a click may rely on.
    for person in ("bob", "carol"):
        s.link(person)
    s.redis.hset(f"chatops:link:{TEAM_ID}:U0CAROL", "groups_at", repr(time.time() - 600))
    _, approval = ask(s, "kill the runaway backfill")
    assert (approval.quorum, approval.approver_groups) == (2, ("presto-oncall",))
    s.click("U0BOB", approval)
    s.click("U0CAROL", approval)  # carol's groups are read again from the provider first
    assert s.approval(approval.id).status == Status.APPROVED
    s.work()
    assert s.approval(approval.id).status == Status.SUCCEEDED
    assert kills(s) == 1
    [call] = s.world.servers["presto"].record.tool_calls("kill_query")
    assert (call.sub, call.token_valid) == ("u-alice", True)

    # Every token presto saw is the provider's, for presto: JWTs with presto's audience, or opaque ones.
    presto = s.world.servers["presto"]
    tokens = bearer_tokens(s, "presto")
    assert tokens
    if config.access_token_format == "opaque":
        assert all(t.count(".") != 2 for t in tokens)
    else:
        assert {r.aud for r in presto.record.all() if r.authorization} == {presto.resource}
    for other in ("spark", "airflow", "ledger"):
        assert not tokens & bearer_tokens(s, other)

    # How the bot dealt with this provider: its client authentication, and where the groups came from.
    token_requests = op.requests("token")
    assert token_requests
    assert {r["auth"] for r in token_requests} == {config.client_auth}
    assert all(r["status"] == 200 for r in token_requests)
    userinfo = op.requests("userinfo")
    if config.groups_in_id_token:
        assert userinfo == []  # the ID token said it all
    else:
        assert userinfo
        assert all(r["status"] == 200 for r in userinfo)


def test_disconnect_revokes_the_refresh_token_at_the_provider(company: Company, s: Scenario) -> None:
    op = company.op
    s.link("bob")
    sealed = s.redis.hget(f"chatops:link:{TEAM_ID}:U0BOB", "refresh")
    assert sealed is not None
    issuer = op.issuer.rstrip("/")
    refresh_token = Sealer([s.settings.chatops_secret_key[0].get_secret_value()]).open(
        sealed.decode(), Binding(TEAM_ID, "U0BOB", issuer)
    )
    assert introspect_active(op, refresh_token)
    open_home(s, "U0BOB")
    after = click_home(s, "U0BOB", HOME_DISCONNECT_ACTION_ID)
    assert "revoked at your identity provider" in json.dumps(after["blocks"])
    assert not s.redis.exists(f"chatops:link:{TEAM_ID}:U0BOB")
    [revocation] = op.requests("revocation")
    assert (revocation["status"], revocation["token_type_hint"]) == (200, "refresh_token")
    assert revocation["auth"] == op.config.client_auth
    assert not introspect_active(op, refresh_token)


def introspect_active(op: OidcPeer, token: str) -> bool:
    """Ask the provider, as its resource servers do, whether `token` is still alive."""
    introspection = f"{op.issuer}/token/introspection"
    form = {"token": token, "token_type_hint": "refresh_token"}
    form |= {"client_id": "mcp-servers", "client_secret": op.servers_secret}
    answer = httpx2.post(introspection, data=form, timeout=10)
    body: dict[str, Any] = answer.json()
    return bool(body.get("active"))


def test_the_bot_finds_the_provider_by_its_metadata_and_reports_it(company: Company, s: Scenario) -> None:
    from bot.clients import company_provider
    from bot.doctor import provider_check

    async def check() -> tuple[bool, str, str]:
        async with httpx2.AsyncClient() as http:
            provider = company_provider(s.settings, http)
            ok, detail = await provider_check(provider)
            return ok, detail, await provider.scope()

    ok, detail, scope = asyncio.run(check())
    assert ok, detail
    assert f"client authentication {company.op.config.client_auth}" in detail
    assert ("groups" in scope.split()) == (company.op.config.groups_scope == "groups")
    assert s.settings.oauth_client_id == BOT_CLIENT_ID
