"""Faults and attacks (ACCEPTANCE.md) against the same loopback world as the scenarios.

The scenario fixtures are reused as they are: the real web app, signed Slack requests, a real Redis and
real RQ workers. `scenario_on` starts a second web process on a Redis of the test's own (one it may kill
or starve); `with_services` runs a coroutine against the bot's own composition root, for the few cases
that must reach inside one process (an enqueue that fails between a decision and its job).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from bot.services import Services, open_services
from bot.settings import Role, load_settings
from bot.web import build_web
from fixtures.redis_proc import RedisProc
from fixtures.server import bind_loopback, start
from fixtures.slack_ingress import SlackIngress
from fixtures.world import SIGNING_SECRET
from tests.scenarios.conftest import (  # noqa: F401  (fixtures, re-exported for this folder)
    Scenario,
    scenario,
    scenario_redis,
    scenario_web,
    scenario_world,
)

T = TypeVar("T")


def with_services(s: Scenario, work: Callable[[Services], Awaitable[T]]) -> T:
    async def run() -> T:
        async with open_services(s.settings, s.bot.team) as svc:
            return await work(svc)

    return asyncio.run(run())


@contextmanager
def scenario_on(s: Scenario, redis: RedisProc) -> Iterator[Scenario]:
    """The same world, served by a fresh web process whose Redis is `redis`."""
    sock = bind_loopback()
    env = s.world.env(public_url=f"http://127.0.0.1:{sock.getsockname()[1]}", redis_url=redis.url)
    settings = load_settings(Role.WEB_HTTP, env=env)
    web = start(build_web(settings, s.bot), sock=sock)
    s.world.allow_redirect(web.url)
    ingress = SlackIngress(web.url, SIGNING_SECRET, slack=s.world.slack)
    try:
        yield Scenario(s.world, settings, env, s.bot, web, ingress, redis.url)
    finally:
        ingress.close()
        web.stop()
