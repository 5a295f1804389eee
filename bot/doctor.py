"""`chatops doctor`: check every setting against the live services and say plainly what is wrong."""

from __future__ import annotations

import httpx2
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.redis_check import judge
from bot.settings import ConfigError, Role, Settings
from mcp_clients.connection import shared_ssl_context
from mcp_clients.provider import Provider, ProviderError
from registry_cache.client import RegistryFetchError, fetch_all
from registry_cache.model import parse_entries

__all__ = ["redis_safety", "run_doctor"]


async def redis_safety(redis: aioredis.Redis) -> tuple[list[str], list[str]]:
    """(problems that must stop the bot, warnings). Evicting keys can silently drop an approval record."""
    config = {**(await redis.config_get("maxmemory-policy")), **(await redis.config_get("appendonly"))}
    return judge({str(k): str(v) for k, v in config.items()})


async def run_doctor(settings: Settings) -> int:
    failures = 0

    def report(ok: bool, what: str, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        print(f"{'ok ' if ok else 'BAD'} {what}: {detail}")

    for role in (Role.WEB_HTTP, Role.WORKER):
        try:
            settings.require(role)
            report(True, f"settings for {role.value}", "complete")
        except ConfigError as exc:
            report(False, f"settings for {role.value}", str(exc))
    if settings.redis_url:
        redis = aioredis.Redis.from_url(settings.redis_url)
        try:
            await redis.ping()
            problems, warnings = await redis_safety(redis)
            report(
                not problems, "Redis", "; ".join(problems + warnings) or "reachable, persistent, no eviction"
            )
        except (RedisError, OSError) as exc:
            report(False, "Redis", f"unreachable ({type(exc).__name__})")
        finally:
            await redis.aclose()
    async with httpx2.AsyncClient(verify=shared_ssl_context(), timeout=10) as http:
        if settings.registry_url:
            try:
                entries, skipped = parse_entries(await fetch_all(http, str(settings.registry_url)))
                detail = f"{len(entries)} usable entries, {len(skipped)} skipped"
                detail += "".join(f"\n    skipped {s.name}: {s.reason}" for s in skipped)
                report(True, "registry", detail)
            except RegistryFetchError as exc:
                report(False, "registry", str(exc))
        if settings.oauth_issuer and settings.oauth_client_id and settings.oauth_client_secret:
            provider = Provider(
                http,
                str(settings.oauth_issuer),
                settings.oauth_client_id,
                settings.oauth_client_secret.get_secret_value(),
            )
            try:
                meta = await provider.metadata()
                report(True, "identity provider", f"token endpoint {meta.token_endpoint}")
            except ProviderError as exc:
                report(False, "identity provider", str(exc))
    if settings.slack_bot_token:
        from bot.identity import whoami

        try:
            bot = whoami(settings)
            report(True, "Slack", f"bot {bot.user_id} in team {bot.team}")
        except ConfigError as exc:
            report(False, "Slack", str(exc))
    print("all good" if failures == 0 else f"{failures} problem(s) found")
    return 0 if failures == 0 else 1
