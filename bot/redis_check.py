"""Is this Redis safe to keep approvals in? Checked when `worker` and `serve` start (ACCEPTANCE 35).

Refused (a `ConfigError`: one line, exit 2):
- an evicting `maxmemory-policy`: it can silently drop an approval record or an execution lease;
- RDB snapshots without the append-only file (Redis's default configuration): after a crash Redis comes
  back with the state of its last snapshot, minutes old, and an approval that was already carried out is
  APPROVED again, so its action could run twice.
Warned: no persistence at all (`save ""`, `appendonly no`; test and dev servers): a crash loses pending
approvals and queued work, but brings nothing old back, so nothing runs twice. A Redis that hides CONFIG
(some managed services) cannot be checked: that is a warning too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from redis.exceptions import ResponseError
from redis.utils import str_if_bytes

from bot.settings import ConfigError

__all__ = ["UnsafeRedis", "judge", "require_safe_redis", "warn_few_replicas"]

log = logging.getLogger(__name__)

UNREADABLE = (
    "Redis CONFIG is not readable here: make sure maxmemory-policy is noeviction and appendonly is yes"
)


class UnsafeRedis(ConfigError):
    def __init__(self, problem: str) -> None:
        super().__init__("REDIS_URL", problem)


def judge(config: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(problems that must stop the bot, warnings) for `CONFIG GET maxmemory-policy appendonly save`."""
    problems: list[str] = []
    warnings: list[str] = []
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        problems.append(f"Redis maxmemory-policy is {policy}: it may evict approvals; set noeviction")
    if config.get("appendonly", "no") != "yes":
        if config.get("save", "").strip():
            problems.append(
                "Redis keeps RDB snapshots without appendonly: after a crash it would bring back approvals "
                "minutes old, and an action could run twice; set appendonly yes"
            )
        else:
            warnings.append(
                "Redis appendonly is off: a Redis crash can lose recent approvals (set appendonly yes)"
            )
    return problems, warnings


def _strings(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {str_if_bytes(k): str_if_bytes(v) for k, v in raw.items()}


def _decide(config: Mapping[str, str], *, log_warnings: bool = True) -> list[str]:
    problems, warnings = judge(config)
    if problems:
        raise UnsafeRedis("; ".join(problems))
    for warning in warnings if log_warnings else ():
        log.warning(warning)
    return warnings


def require_safe_redis(connection: redis.Redis, *, log_warnings: bool = True) -> list[str]:
    """Raise `UnsafeRedis` for an evicting Redis; return the warnings otherwise (logged unless the caller
    checks again later and logs them then: each warning once per start)."""
    try:
        config = {
            **connection.config_get("maxmemory-policy"),
            **connection.config_get("appendonly"),
            **connection.config_get("save"),
        }
    except ResponseError:
        if log_warnings:
            log.warning(UNREADABLE)
        return [UNREADABLE]
    return _decide(_strings(config), log_warnings=log_warnings)


def warn_few_replicas(connection: redis.Redis, wanted: int) -> str | None:
    """A warning (logged, and returned) when fewer replicas are connected than REDIS_MIN_REPLICAS asks to
    confirm each action's start: until more connect, every approved action would be refused."""
    if wanted <= 0:
        return None
    try:
        connected = int(connection.info("replication").get("connected_slaves", 0))
    except ResponseError:
        return None  # INFO hidden (some managed services): nothing to say
    if connected >= wanted:
        return None
    warning = (
        f"Redis has {connected} connected replica(s) and REDIS_MIN_REPLICAS is {wanted}: approved actions "
        "will not run until enough replicas connect (or set REDIS_MIN_REPLICAS)"
    )
    log.warning(warning)
    return warning
