"""Composition: the clients one unit of work needs (a web process, or one job), built from settings.

Async clients are built per job on purpose: RQ runs each async job on a fresh event loop, and an httpx2 or
Redis client bound to a previous loop must not be reused. Building them is cheap (one shared TLS context).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx2
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo

from agent.usage import price_for
from approvals.audit import Audit
from approvals.model_bill import UsageBook
from approvals.seal import seal_keys
from approvals.store import ApprovalStore
from approvals.turns import TurnStore
from bot.linking import Linking
from bot.metrics import Metrics, metrics_from_audit
from bot.poster import Poster, make_slack_client, slack_session
from bot.redis_clients import async_client
from bot.server_linking import ServerLinking
from bot.settings import Settings
from bot.slack_people import SlackPeople
from llm.anthropic import AnthropicModel, make_client
from mcp_clients.claims import ClaimPaths
from mcp_clients.connection import shared_ssl_context
from mcp_clients.egress import outbound_client
from mcp_clients.gateway import Gateway
from mcp_clients.listing import ListingCache
from mcp_clients.provider import Provider
from mcp_clients.sealing import Sealer
from mcp_clients.server_oauth import PerServerAuth
from mcp_clients.tokens import TokenBroker
from registry_cache.client import fetch_all
from registry_cache.snapshot import SharedSnapshot

__all__ = ["BotIdentity", "Services", "company_provider", "open_services"]

# Given once: left to itself, redis-py looks its own version up in the package metadata for every new
# connection (CLIENT SETINFO), which a freshly forked job paid on each of its connections.
REDIS_DRIVER = DriverInfo(name="redis-py", lib_version=redis.__version__)


@dataclass(frozen=True)
class BotIdentity:
    team: str
    user_id: str
    bot_id: str


@dataclass
class Services:
    settings: Settings
    redis: aioredis.Redis
    http: httpx2.AsyncClient
    provider: Provider
    broker: TokenBroker
    snapshot: SharedSnapshot
    gateway: Gateway
    poster: Poster
    store: TurnStore
    approvals: ApprovalStore  # the one approval store of this unit of work (bot.approval_wiring uses it)
    audit: Audit
    linking: Linking
    metrics: Metrics
    server_linking: ServerLinking  # servers with their own authorization server: Connect, Disconnect
    # Built on first use: approved actions and sweeps never call the model, and building the client
    # costs tens of milliseconds in a freshly forked job.
    _build_model: Callable[[], AnthropicModel | None]
    _model: AnthropicModel | None = None
    _model_built: bool = False

    @property
    def model(self) -> AnthropicModel | None:
        if not self._model_built:
            self._model, self._model_built = self._build_model(), True
        return self._model

    @property
    def usage_book(self) -> UsageBook:
        """Where each turn's model usage is recorded (audit, per person and per hour), priced."""
        model = self.settings.chatops_model
        return UsageBook(self.redis, self.audit, model, price_for(model, self.settings.prices))


def company_provider(settings: Settings, http: httpx2.AsyncClient) -> Provider:
    """The company's identity provider as the settings describe it (SPEC §3, §5)."""
    secret = settings.oauth_client_secret.get_secret_value() if settings.oauth_client_secret else ""
    return Provider(
        http,
        str(settings.oauth_issuer or ""),
        settings.oauth_client_id or "",
        secret,
        private_key=settings.oauth_private_key,
        key_id=settings.oauth_client_key_id,
        auth_method=settings.oauth_token_auth_method,
        scopes=settings.oauth_scopes,
        claims=ClaimPaths(groups=settings.oauth_groups_claim, email=settings.oauth_email_claim),
    )


@asynccontextmanager
async def open_services(settings: Settings, team: str) -> AsyncIterator[Services]:
    assert settings.redis_url is not None, "settings.require() guarantees REDIS_URL outside demo/dev"
    # A blocking pool: under a burst, requests wait briefly for a connection instead of failing with
    # MaxConnectionsError (which turned into 503s at 200 events/s under CPU contention).
    # Retries: after a Redis restart every pooled connection is dead, and without them the first command on
    # each failed (an event answered 503, a click told "couldn't record"). redis-py gives its own pools
    # retries; a pool passed in, as here, gets none unless asked.
    # Under Sentinel (REDIS_URL redis+sentinel://) the same pool asks the Sentinels where the primary is on
    # every (re)connection: the retries then carry a command across a failover once it is promoted.
    redis = async_client(
        settings.redis_url,
        max_connections=200,
        timeout=5,
        driver_info=REDIS_DRIVER,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
    )
    # The registry and the identity provider: connections only to addresses the URL rules allow (SPEC §6).
    http = outbound_client(timeout=httpx2.Timeout(15, connect=5))
    provider = company_provider(settings, http)
    masters = [k.get_secret_value() for k in settings.chatops_secret_key]
    sealer = Sealer(masters)
    broker = TokenBroker(redis, provider, sealer)
    registry_url = str(settings.registry_url or "")
    metrics = Metrics(redis)
    snapshot = SharedSnapshot(
        redis,
        lambda: fetch_all(http, registry_url),
        ttl_seconds=settings.registry_ttl_seconds,
        stale_max_seconds=settings.registry_stale_max_seconds,
        on_event=metrics.registry_event,
    )
    # Servers with their own authorization server (`auth: oauth`): each person's own tokens for each.
    server_auth = PerServerAuth(redis, sealer, public_url=settings.base_url, snapshot=snapshot, broker=broker)
    gateway = Gateway(
        snapshot,
        broker,
        output_max_chars=settings.tool_output_max_chars,
        listings=ListingCache(redis),
        server_auth=server_auth,
    )
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    slack = slack_session()
    poster = Poster(make_slack_client(token, str(settings.slack_api_url), session=slack), redis, team)

    def build_model() -> AnthropicModel | None:
        if settings.anthropic_api_key is None:
            return None
        client = make_client(
            settings.anthropic_api_key.get_secret_value(),
            str(settings.anthropic_base_url) if settings.anthropic_base_url else None,
            http_client=httpx2.AsyncClient(
                verify=shared_ssl_context(), timeout=httpx2.Timeout(120, connect=5)
            ),
        )
        model, price = settings.chatops_model, price_for(settings.chatops_model, settings.prices)
        return AnthropicModel(
            client,
            model,
            on_result=metrics.model_result,
            on_usage=lambda usage: metrics.model_usage(model, usage, price),
            tools_ttl=settings.cache_tools_ttl,
        )

    linking = Linking(
        redis,
        provider,
        broker,
        snapshot,
        people=SlackPeople(poster),
        sealer=sealer,
        public_url=settings.base_url,
        match_email=settings.oauth_match_email,
    )
    seal, *older_seals = seal_keys(masters)
    services = Services(
        settings,
        redis,
        http,
        provider,
        broker,
        snapshot,
        gateway,
        poster,
        TurnStore(redis, replication=settings.redis_replication),
        ApprovalStore(
            redis, seal_key=seal, older_seal_keys=older_seals, replication=settings.redis_replication
        ),
        Audit(
            redis,
            retention_days=settings.audit_retention_days,
            on_record=lambda r: metrics.emit(metrics_from_audit(r)),
        ),
        linking,
        metrics,
        ServerLinking(redis, server_auth, public_url=settings.base_url),
        build_model,
    )
    try:
        yield services
    finally:
        await metrics.flush()  # a job's last counters would be lost with the connection otherwise
        await slack.close()
        await server_auth.aclose()
        await http.aclose()
        await redis.aclose()
