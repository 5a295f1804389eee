"""An identity provider and a registry on loopback, and the bot's token machinery wired to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx2
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from bot.poster import Poster
from bot.slack_people import SlackPeople
from fixtures.idp import CLIENT_ID, DEFAULT_CLIENT_SECRET, FakeIdP
from fixtures.registry import FakeRegistry
from fixtures.server import serve
from fixtures.slack import FakeSlack
from fixtures.world import World, running_world
from flows.linking import Linking
from mcp_clients.gateway import Breaker, Caller, Gateway
from mcp_clients.listing import ListingCache
from mcp_clients.provider import Provider
from mcp_clients.sealing import Sealer
from mcp_clients.tokens import Audience, TokenBroker
from registry_cache.client import fetch_all
from registry_cache.snapshot import SharedSnapshot

PUBLIC_URL = "http://127.0.0.1:1"
TEAM = "T0CHATOPS"
SLACK_IDS = {"alice": "U0ALICE", "bob": "U0BOB", "carol": "U0CAROL", "dave": "U0DAVE", "erin": "U0ERIN"}
BROWSER = "one-browser"  # what GET /oauth/start would have put in the browser's cookie


def make_linking(
    aredis: aioredis.Redis,
    provider: Provider,
    broker: TokenBroker,
    snapshot: SharedSnapshot,
    sealer: Sealer,
    slack: FakeSlack,
) -> Linking:
    people = SlackPeople(Poster(slack.async_client(), aredis, TEAM))
    return Linking(aredis, provider, broker, snapshot, people=people, sealer=sealer, public_url=PUBLIC_URL)


async def link_in_browser(linking: Linking, idp: FakeIdP, person: str, user: str) -> None:
    """The real browser flow: log in at the IdP, start, authorize, come back to the callback."""
    offer = (await linking.offer(TEAM, user)).rsplit("/", 1)[1]
    authorize_url = await linking.start(offer, browser=BROWSER)
    async with httpx2.AsyncClient() as browser:
        await browser.get(idp.login_url(person))
        answer = await browser.get(authorize_url)
    assert answer.status_code in (302, 303), answer.text
    params = dict(httpx2.URL(answer.headers["location"]).params)
    await linking.finish(
        state=params.get("state"), code=params.get("code"), iss=params.get("iss"), error=None, browser=BROWSER
    )


@dataclass
class IdentityWorld:
    idp: FakeIdP
    registry: FakeRegistry
    http: httpx2.AsyncClient
    provider: Provider
    broker: TokenBroker
    snapshot: SharedSnapshot
    linking: Linking
    resources: dict[str, str]
    secret_key: str  # the broker's CHATOPS_SECRET_KEY

    def audience(self, name: str) -> Audience:
        """The registry entry behind `PRESTO_URL` and the like, as the gateway asks for its tokens."""
        url = self.resources[name]
        return Audience(f"io.example/{name.removesuffix('_URL').lower()}", url, url)

    async def link(self, person: str) -> None:
        await link_in_browser(self.linking, self.idp, person, SLACK_IDS[person])


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with FakeIdP(redirect_uris=[f"{PUBLIC_URL}/oauth/callback"]) as provider:
        yield provider


@pytest.fixture
async def identity_world(idp: FakeIdP, aredis: aioredis.Redis) -> AsyncIterator[IdentityWorld]:
    names = [
        "PRESTO_URL",
        "SPARK_URL",
        "AIRFLOW_URL",
        "LEDGER_URL",
        "STATUSPAGE_URL",
        "HIVE_URL",
        "SEARCH_URL",
    ]
    urls = {n: f"http://127.0.0.1:{9000 + i}/mcp" for i, n in enumerate(names)}
    registry = FakeRegistry.from_file(urls=urls)
    with serve(registry.app) as reg_server, FakeSlack() as slack:
        async with httpx2.AsyncClient() as http:
            provider = Provider(http, idp.issuer, CLIENT_ID, DEFAULT_CLIENT_SECRET)
            secret_key = Fernet.generate_key().decode()
            sealer = Sealer([secret_key])
            broker = TokenBroker(aredis, provider, sealer)
            snapshot = SharedSnapshot(
                aredis, lambda: fetch_all(http, reg_server.url), ttl_seconds=60, stale_max_seconds=900
            )
            linking = make_linking(aredis, provider, broker, snapshot, sealer, slack)
            yield IdentityWorld(idp, registry, http, provider, broker, snapshot, linking, urls, secret_key)


@dataclass
class Env:
    world: World
    broker: TokenBroker
    gateway: Gateway  # lists every server live
    cached: Gateway  # remembers listings in Redis, as the bot's processes do
    linking: Linking

    async def caller(self, person: str, channel: str = "C0DATAENG") -> Caller:
        user = SLACK_IDS[person]
        if await self.broker.identity(TEAM, user) is None:
            await link_in_browser(self.linking, self.world.idp, person, user)
        identity = await self.broker.identity(TEAM, user)
        assert identity is not None
        return Caller(TEAM, user, channel, identity)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with running_world() as w:
        w.allow_redirect(PUBLIC_URL)
        yield w


@pytest.fixture
async def env(world: World, aredis: aioredis.Redis) -> AsyncIterator[Env]:
    for server in world.servers.values():
        server.record.clear()
    async with httpx2.AsyncClient() as http:
        provider = Provider(http, world.idp.issuer, CLIENT_ID, DEFAULT_CLIENT_SECRET)
        sealer = Sealer([world.secret_key])
        broker = TokenBroker(aredis, provider, sealer)
        snapshot = SharedSnapshot(
            aredis, lambda: fetch_all(http, world.registry_url), ttl_seconds=60, stale_max_seconds=900
        )
        gateway = Gateway(snapshot, broker, output_max_chars=2000, breaker=Breaker())
        cached = Gateway(snapshot, broker, breaker=Breaker(), listings=ListingCache(aredis))
        linking = make_linking(aredis, provider, broker, snapshot, sealer, world.slack)
        yield Env(world, broker, gateway, cached, linking)
    world.registry.reset()
    for server in world.servers.values():
        server.knobs.reset()
