"""`chatops doctor`: check every setting against the live services and say plainly what is wrong."""

from __future__ import annotations

import os

import anthropic
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from agent.usage import price_for
from agent.workflow import load_workflows
from approvals import turn_queue
from approvals.model_bill import cache_report, last_hour
from bot.clients import company_provider
from bot.queues import AGENT, QUEUE_NAMES, waiting_key
from bot.redis_check import judge
from bot.redis_clients import async_client
from bot.settings import ConfigError, Role, Settings
from llm.anthropic import make_client
from mcp_clients.egress import outbound_client
from mcp_clients.provider import Provider, ProviderError
from registry_cache.client import RegistryFetchError, RegistryRead, read_registry
from registry_cache.model import parse_entries
from registry_cache.remotes import header_values

__all__ = ["provider_check", "redis_safety", "run_doctor", "workers"]


async def redis_safety(redis: aioredis.Redis) -> tuple[list[str], list[str]]:
    """(problems that must stop the bot, warnings). Evicting keys can silently drop an approval record."""
    config = {
        **(await redis.config_get("maxmemory-policy")),
        **(await redis.config_get("appendonly")),
        **(await redis.config_get("save")),
    }
    return judge({str(k): str(v) for k, v in config.items()})


async def provider_check(provider: Provider) -> tuple[bool, str]:
    """Whether the provider's metadata lets the bot link people and learn who they are, and how it will
    authenticate there."""
    try:
        meta = await provider.metadata()
        method, scope = await provider.auth_method(), await provider.scope()
    except ProviderError as exc:
        return False, str(exc)
    problems = []
    if meta.jwks_uri is None and meta.userinfo_endpoint is None:
        problems.append("it publishes neither jwks_uri nor a userinfo endpoint, so nobody can be identified")
    supported = meta.token_endpoint_auth_methods_supported
    if supported is not None and method not in supported:
        problems.append(
            f"it does not list {method} among token_endpoint_auth_methods_supported {list(supported)}"
        )
    if meta.revocation_endpoint is None:
        problems.append("(note) no revocation_endpoint: Disconnect can only forget tokens, not revoke them")
    detail = f"token endpoint {meta.token_endpoint}, client authentication {method}, scope {scope!r}"
    detail += "".join(f"\n    {p}" for p in problems)
    return not any(not p.startswith("(note)") for p in problems), detail


async def workers(redis: aioredis.Redis) -> tuple[bool, str]:
    """Who listens on each queue (RQ's own registry of live workers; the turn pools' slots) and what waits
    there. Bad: jobs wait on a queue no worker takes (questions would never be answered)."""
    parts, ok = [], True
    for name in QUEUE_NAMES:
        async with redis.pipeline(transaction=False) as pipe:
            if name == AGENT:  # the turn queue (approvals.turn_queue): its pools' live slots
                turn_queue.queue_standing(pipe)
            else:
                pipe.scard(WORKERS_BY_QUEUE_KEY % name)
                pipe.llen(waiting_key(name))
            listening, waiting = await pipe.execute()
        kind = "turn slots" if name == AGENT else "workers"
        parts.append(f"{name}: {listening} {kind}, {waiting} waiting")
        ok = ok and (listening > 0 or waiting == 0)
    detail = "; ".join(parts)
    if not ok:
        detail += " (start `chatops worker`)"
    return ok, detail


async def model_check(settings: Settings) -> tuple[bool, str]:
    """Count the tokens of a one-word message: the key, the address and the model id are all checked, and
    nothing is generated (nothing is billed)."""
    assert settings.anthropic_api_key is not None
    base_url = str(settings.anthropic_base_url) if settings.anthropic_base_url else None
    async with make_client(
        settings.anthropic_api_key.get_secret_value(), base_url, max_retries=0, timeout=15
    ) as client:
        try:
            await client.messages.count_tokens(
                model=settings.chatops_model, messages=[{"role": "user", "content": "ping"}]
            )
        except anthropic.AuthenticationError:
            return False, "ANTHROPIC_API_KEY was not accepted"
        except anthropic.NotFoundError:
            return False, f"CHATOPS_MODEL {settings.chatops_model!r} is not a model this key can use"
        except anthropic.APIConnectionError as exc:
            return False, f"the Messages API could not be reached ({type(exc.__cause__ or exc).__name__})"
        except anthropic.APIStatusError as exc:
            return False, f"the Messages API answered HTTP {exc.status_code}"
    return True, f"{settings.chatops_model} answers with this key"


def registry_check(read: RegistryRead) -> tuple[bool, str]:
    """What was skipped and why, what the read left out, and the usable servers that cannot be called
    from here (a header variable unset in this environment): only those are bad, the rest is the
    registry owners' business."""
    entries, skipped = parse_entries(read.entries)
    detail = f"{len(entries)} usable entries, {len(skipped)} skipped"
    detail += "".join(f"\n    skipped {s.name}: {s.reason}" for s in skipped)
    detail += "".join(f"\n    left out: {problem}" for problem in read.problems)
    uncallable = [
        (e.name, why) for e in entries if isinstance(why := header_values(e.headers, os.environ), str)
    ]
    detail += "".join(f"\n    cannot call {name}: {why}" for name, why in uncallable)
    return not uncallable, detail


async def run_doctor(settings: Settings) -> int:
    failures = 0

    def report(ok: bool, detail: str, *, what: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        print(f"{'ok ' if ok else 'BAD'} {what}: {detail}")

    for role in (Role.WEB_HTTP, Role.WORKER):
        try:
            settings.require(role)
            report(True, what=f"settings for {role.value}", detail="complete")
        except ConfigError as exc:
            report(False, what=f"settings for {role.value}", detail=str(exc))
    if settings.redis_url:
        redis = async_client(settings.redis_url)
        try:
            await redis.ping()
            problems, warnings = await redis_safety(redis)
            report(
                not problems,
                what="Redis",
                detail="; ".join(problems + warnings) or "reachable, persistent, no eviction",
            )
            report(*await workers(redis), what="workers")
            cache = cache_report(*await last_hour(redis))
            if price_for(settings.chatops_model, settings.prices) is None:
                cache += f"\n    (note) no price for {settings.chatops_model}: dollar estimates stay 0 until "
                cache += "CHATOPS_MODEL_PRICES names it"
            report(True, what="model cache", detail=cache)
        except (RedisError, OSError) as exc:
            report(False, what="Redis", detail=f"unreachable ({type(exc).__name__})")
        finally:
            await redis.aclose()
    workflows, errors = load_workflows(settings.workflows_dir)
    detail = f"{len(workflows)} loaded from {settings.workflows_dir}"
    report(not errors, what="workflows", detail=detail + "".join(f"\n    {e}" for e in errors))
    async with outbound_client(timeout=10) as http:
        if settings.registry_url:
            try:
                report(
                    *registry_check(await read_registry(http, str(settings.registry_url))), what="registry"
                )
            except RegistryFetchError as exc:
                report(False, what="registry", detail=str(exc))
        if settings.oauth_issuer and settings.oauth_client_id:
            ok, detail = await provider_check(company_provider(settings, http))
            report(ok, what="identity provider", detail=detail)
    if settings.anthropic_api_key is not None:
        ok, detail = await model_check(settings)
        report(ok, what="model", detail=detail)
    if settings.slack_bot_token:
        from bot.identity import whoami

        try:
            bot = whoami(settings)
            report(True, what="Slack", detail=f"bot {bot.user_id} in team {bot.team}")
        except ConfigError as exc:
            report(False, what="Slack", detail=str(exc))
    print("all good" if failures == 0 else f"{failures} problem(s) found")
    return 0 if failures == 0 else 1
