"""`chatops doctor`: check every setting against the live services and say plainly what is wrong.

One line per check, always, in the order `serve` and `worker` check at start (settings, Redis, Slack) and
then what only doctor checks: `ok`, `warn` (works, but look at it), `BAD` (exit 1) or `skip` (a setting it
needs is missing: `skipped: needs X`). `--json` prints the same as one JSON object, for monitoring.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import anthropic
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from agent.usage import price_for
from agent.workflow import load_workflows
from approvals import turn_queue
from approvals.model_bill import cache_report, last_hour
from bot.clients import company_provider
from bot.preflight import redis_unreachable, whoami
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

__all__ = ["Check", "provider_check", "redis_safety", "run_doctor", "workers"]


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
    there. Bad: a queue nobody takes from (a question or an approved action put there would never be
    answered)."""
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
        ok = ok and listening > 0
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


@dataclass(frozen=True)
class Check:
    check: str
    status: str  # ok | warn | BAD | skip
    detail: str


def _check(what: str, ok: bool, detail: str) -> Check:
    # Indented "(note)" lines (no revocation endpoint, no price for the model) are information, not warnings:
    # the check passes. `warn` is for what can cost something (a Redis that can lose approvals).
    return Check(what, "ok" if ok else "BAD", detail)


def _skip(what: str, *needs: str) -> Check:
    return Check(what, "skip", f"skipped: needs {', '.join(needs)}")


def _settings_checks(settings: Settings) -> list[Check]:
    checks = []
    for role in (Role.WEB_HTTP, Role.WORKER):
        problems = settings.problems(role)
        detail = "complete" if not problems else "; ".join(str(p) for p in problems)
        checks.append(Check(f"settings for {role.value}", "BAD" if problems else "ok", detail))
    return checks


async def _redis_checks(settings: Settings) -> list[Check]:
    if not settings.redis_url:
        return [_skip(what, "REDIS_URL") for what in ("Redis", "workers", "model cache")]
    redis = async_client(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        await redis.ping()
        problems, warnings = await redis_safety(redis)
        status = "BAD" if problems else "warn" if warnings else "ok"
        detail = "; ".join(problems + warnings) or "reachable, persistent, no eviction"
        return [
            Check("Redis", status, detail),
            _check("workers", *await workers(redis)),
            _check("model cache", True, await _cache_detail(settings, redis)),
        ]
    except (RedisError, OSError) as exc:  # the wording of `serve` and `worker` (bot.preflight)
        detail = str(redis_unreachable(settings.redis_url, exc))
        unchecked = [_skip(what, "a Redis that answers") for what in ("workers", "model cache")]
        return [Check("Redis", "BAD", detail), *unchecked]
    finally:
        await redis.aclose()


async def _cache_detail(settings: Settings, redis: aioredis.Redis) -> str:
    """The share of the last hour's input read from the prompt cache; a model without a price is a note."""
    cache = cache_report(*await last_hour(redis))
    if price_for(settings.chatops_model, settings.prices) is None:
        cache += f"\n    (note) no price for {settings.chatops_model}: dollar estimates stay 0 until "
        cache += "CHATOPS_MODEL_PRICES names it"
    return cache


def _slack_check(settings: Settings) -> Check:
    if not settings.slack_bot_token:
        return _skip("Slack", "SLACK_BOT_TOKEN")
    try:
        bot = whoami(settings)
    except ConfigError as exc:
        return Check("Slack", "BAD", str(exc))
    return Check("Slack", "ok", f"bot {bot.user_id} in team {bot.team}")


async def _outside_checks(settings: Settings) -> list[Check]:
    """The registry, the identity provider and the model: doctor's alone (the bot works through their
    outages)."""
    checks = []
    async with outbound_client(timeout=10) as http:
        if settings.registry_url is None:
            checks.append(_skip("registry", "REGISTRY_URL"))
        else:
            try:
                read = await read_registry(http, str(settings.registry_url))
                checks.append(_check("registry", *registry_check(read)))
            except RegistryFetchError as exc:
                checks.append(Check("registry", "BAD", str(exc)))
        if settings.oauth_issuer is None or settings.oauth_client_id is None:
            given = {"OAUTH_ISSUER": settings.oauth_issuer, "OAUTH_CLIENT_ID": settings.oauth_client_id}
            checks.append(_skip("identity provider", *[v for v, x in given.items() if x is None]))
        else:
            checks.append(
                _check("identity provider", *await provider_check(company_provider(settings, http)))
            )
    if settings.anthropic_api_key is None:
        checks.append(_skip("model", "ANTHROPIC_API_KEY"))
    else:
        checks.append(_check("model", *await model_check(settings)))
    return checks


def _workflows_check(settings: Settings) -> Check:
    workflows, errors = load_workflows(settings.workflows_dir)
    detail = f"{len(workflows)} loaded from {settings.workflows_dir}"
    return _check("workflows", not errors, detail + "".join(f"\n    {e}" for e in errors))


async def all_checks(settings: Settings) -> list[Check]:
    """Every check, in order: those `serve` and `worker` make at start first, in their order."""
    checks = _settings_checks(settings)
    checks += await _redis_checks(settings)
    checks.append(_slack_check(settings))
    checks += await _outside_checks(settings)
    checks.append(_workflows_check(settings))
    return checks


async def run_doctor(settings: Settings, *, as_json: bool = False) -> int:
    checks = await all_checks(settings)
    failures = sum(c.status == "BAD" for c in checks)
    warnings = sum(c.status == "warn" for c in checks)
    if as_json:
        print(json.dumps({"ok": not failures, "checks": [asdict(c) for c in checks]}, ensure_ascii=False))
    else:
        for c in checks:
            print(f"{c.status:<4} {c.check}: {c.detail}")
        summary = "all good" if not failures else f"{failures} problem(s) found"
        print(summary + (f", {warnings} warning(s)" if warnings else ""))
    return 0 if failures == 0 else 1
