"""The clients a wiring opens (bot.wiring): the Redis pool, the company's identity provider, the model."""

from __future__ import annotations

import httpx2
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo

from agent.usage import price_for
from bot.metrics import Metrics
from bot.redis_clients import async_client
from bot.settings import Settings
from llm.anthropic import AnthropicModel, make_client
from mcp_clients.claims import ClaimPaths
from mcp_clients.connection import shared_ssl_context
from mcp_clients.provider import Provider

__all__ = ["company_provider", "model_client", "redis_pool"]

# Given once: left to itself, redis-py looks its own version up in the package metadata for every new
# connection (CLIENT SETINFO), which a freshly forked job paid on each of its connections.
REDIS_DRIVER = DriverInfo(name="redis-py", lib_version=redis.__version__)


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


def redis_pool(url: str) -> aioredis.Redis:
    # A blocking pool: under a burst, requests wait briefly for a connection instead of failing with
    # MaxConnectionsError (which turned into 503s at 200 events/s under CPU contention).
    # Retries: after a Redis restart every pooled connection is dead, and without them the first command on
    # each failed (an event answered 503, a click told "couldn't record"). redis-py gives its own pools
    # retries; a pool passed in, as here, gets none unless asked.
    # Under Sentinel (REDIS_URL redis+sentinel://) the same pool asks the Sentinels where the primary is on
    # every (re)connection: the retries then carry a command across a failover once it is promoted.
    return async_client(
        url,
        max_connections=200,
        timeout=5,
        driver_info=REDIS_DRIVER,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
    )


def model_client(settings: Settings, metrics: Metrics) -> AnthropicModel | None:
    if settings.anthropic_api_key is None:
        return None
    client = make_client(
        settings.anthropic_api_key.get_secret_value(),
        str(settings.anthropic_base_url) if settings.anthropic_base_url else None,
        http_client=httpx2.AsyncClient(verify=shared_ssl_context(), timeout=httpx2.Timeout(120, connect=5)),
    )
    model, price = settings.chatops_model, price_for(settings.chatops_model, settings.prices)
    return AnthropicModel(
        client,
        model,
        on_result=metrics.model_result,
        on_usage=lambda usage: metrics.model_usage(model, usage, price),
        tools_ttl=settings.cache_tools_ttl,
    )
