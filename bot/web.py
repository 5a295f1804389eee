"""The `web` process: Slack endpoint (HTTP mode), account linking, health, readiness and metrics (SPEC §4).

One Starlette app; Bolt handles `/slack/events` with `process_before_response=True` so that a listener's
`ack()` *is* the HTTP response (no ~10 ms polling floor, perf-anchors §1) and nothing slow runs before it.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped, warning_token_skipped
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from approvals.assistant_threads import AssistantThreads
from approvals.stops import TurnStops
from bot import listeners
from bot.assistant import build_assistant
from bot.identity import BotIdentity
from bot.ingress import Ingress
from bot.link_routes import LinkRoutes
from bot.metrics import scrape
from bot.poster import make_slack_client
from bot.queues import Queues
from bot.redis_check import require_safe_redis
from bot.server_routes import ServerRoutes
from bot.settings import Settings
from bot.wiring import Wiring, open_wiring
from flows.assistant_prompts import AssistantPrompts
from flows.server_linking import ServerConnected
from flows.stop_rights import StopRights

__all__ = ["build_bolt", "build_web"]

log = logging.getLogger(__name__)


class _QuietTokenNotes(logging.Filter):
    """Bolt warns at every start that `token` goes unused: we hand it a client (for SLACK_API_URL) and an
    authorize function (no auth.test per request) on purpose, and SLACK_BOT_TOKEN in the environment is
    ours. To an operator the two lines only suggest something is misconfigured; they are dropped."""

    NOTES = frozenset({warning_client_prioritized_and_token_skipped(), warning_token_skipped()})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.NOTES


_BOLT_LOGGER = logging.getLogger("slack_bolt.AsyncApp")
# Bolt's debug and info lines carry whole request bodies (people's words, response_url: a credential), even
# of requests refused for a bad signature (at info). Its middleware loggers copy this level at construction,
# so none of those lines is ever written, whatever the root level (bot.logs keeps slack_bolt at WARNING too).
_BOLT_LOGGER.setLevel(logging.WARNING)


def build_bolt(settings: Settings, wiring: Wiring) -> AsyncApp:
    if not any(isinstance(f, _QuietTokenNotes) for f in _BOLT_LOGGER.filters):
        _BOLT_LOGGER.addFilter(_QuietTokenNotes())
    bot, token = wiring.bot, settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""

    async def authorize(**_: Any) -> AuthorizeResult:
        # One workspace, one bot token: no auth.test per request.
        return AuthorizeResult(
            enterprise_id=None, team_id=bot.team, bot_token=token, bot_user_id=bot.user_id, bot_id=bot.bot_id
        )

    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    app = AsyncApp(
        logger=_BOLT_LOGGER,
        client=make_slack_client(token, str(settings.slack_api_url)),
        signing_secret=secret,
        authorize=authorize,
        process_before_response=True,
        request_verification_enabled=secret is not None,
        raise_error_for_unhandled_request=False,
    )
    ingress = Ingress(wiring.store, wiring.queues, bot, wiring.metrics)
    app.middleware(ingress.middleware)
    clicks = wiring.approval_clicks()
    parts = listeners.Listeners(
        bot=bot,
        poster=wiring.poster,
        clicks=clicks,
        home=wiring.home(),
        accounts=wiring.accounts(),
        workflows=wiring.workflow_requests(),
        broker=wiring.broker,
        linking=wiring.linking,
        audit=wiring.audit,
        feedback=wiring.feedback(),
        questions=wiring.questions(),
        stops=StopRights(TurnStops(wiring.redis), wiring.store, wiring.broker, wiring.snapshot, wiring.audit),
        turns=wiring.store,
    )
    listeners.register(app, parts)
    prompts = AssistantPrompts(wiring.broker, wiring.linking, wiring.snapshot, parts.workflows)
    # After the ingress: messages in assistant threads are turns (DMs); the thread events reach the Assistant.
    app.use(build_assistant(prompts, AssistantThreads(wiring.redis), wiring.poster))
    return app


def build_web(settings: Settings, bot: BotIdentity, *, slack_http: bool = True) -> Starlette:
    """The web process, wired once when its lifespan starts (the clients need the server's event loop)."""
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with open_wiring(settings, bot) as wiring:
            # An evicting Redis can silently drop approvals. One blocking round trip, before serving anything.
            require_safe_redis(wiring.queues.connection)
            state["wiring"] = wiring
            state["bolt"] = AsyncSlackRequestHandler(build_bolt(settings, wiring))
            yield

    async def slack_events(request: Request) -> Response:
        handler: AsyncSlackRequestHandler = state["bolt"]
        started = time.perf_counter()
        response = await handler.handle(request)
        metrics = state["wiring"].metrics
        metrics.inc("chatops_slack_acks_total", {"status": str(response.status_code)})
        metrics.observe("chatops_slack_ack_seconds", {}, time.perf_counter() - started)
        return response

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        checks = await _checks(state["wiring"], str(settings.registry_url))
        ready = all(v == "ok" for v in checks.values())
        return Response(
            json.dumps({"ready": ready, **checks}),
            status_code=200 if ready else 503,
            media_type="application/json",
        )

    async def metrics(_: Request) -> Response:
        # The deployment's metrics live in Redis (every web and worker process writes there); this
        # process's own runtime metrics (process_*, python_*) from the default registry are appended.
        wiring: Wiring = state["wiring"]
        await wiring.metrics.flush()  # what this process counted a moment ago is in the answer too
        return Response(await scrape(wiring.redis) + generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes = [
        *LinkRoutes(lambda: (state["wiring"].linking, state["wiring"].audit), settings.base_url).routes(),
        *ServerRoutes(
            lambda: (state["wiring"].server_linking, state["wiring"].audit),
            settings.base_url,
            lambda done: _answer_waiting(state["wiring"].queues, done),
        ).routes(),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if slack_http:
        routes.insert(0, Route("/slack/events", slack_events, methods=["POST"]))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.chatops = state
    return app


async def _checks(wiring: Wiring, registry_url: str) -> dict[str, str]:
    """/readyz: does Redis answer, does the registry."""
    checks: dict[str, str] = {}
    try:
        await wiring.ping()
        checks["redis"] = "ok"
    except (RedisError, OSError) as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        answer = await wiring.http.get(
            registry_url.rstrip("/") + "/v0.1/servers", params={"limit": 1}, timeout=3
        )
        checks["registry"] = "ok" if answer.status_code == 200 else f"error: HTTP {answer.status_code}"
    except httpx2.HTTPError as exc:
        checks["registry"] = f"error: {type(exc).__name__}"
    return checks


async def _answer_waiting(queues: Queues, done: ServerConnected) -> None:
    """The requests that waited for this server's connection run again, now with its tools (a new attempt
    each: a request may wait for two servers in turn)."""
    for turn_id in done.waiting:
        queues.enqueue_turn(turn_id, f"connected-{secrets.token_hex(4)}")
