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
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from approvals.audit import AuditRecord
from bot import listeners
from bot.ingress import Ingress
from bot.link_routes import LinkRoutes
from bot.linking import LinkResult
from bot.poster import make_slack_client
from bot.queues import Queues
from bot.redis_check import arequire_safe_redis
from bot.redis_clients import sync_client
from bot.server_linking import ServerConnected
from bot.server_routes import ServerRoutes
from bot.services import BotIdentity, Services, open_services
from bot.settings import Settings

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


def build_bolt(settings: Settings, bot: BotIdentity, services: Services, queues: Queues) -> AsyncApp:
    if not any(isinstance(f, _QuietTokenNotes) for f in _BOLT_LOGGER.filters):
        _BOLT_LOGGER.addFilter(_QuietTokenNotes())
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""

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
    ingress = Ingress(services.store, queues, bot, services.metrics)
    app.middleware(ingress.middleware)
    listeners.register(app, services, queues, bot)
    return app


def build_web(settings: Settings, bot: BotIdentity, *, slack_http: bool = True) -> Starlette:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with open_services(settings, bot.team) as services:
            await arequire_safe_redis(services.redis)  # an evicting Redis can silently drop approvals
            queues = Queues(sync_client(str(settings.redis_url)))

            async def on_linked(result: LinkResult) -> None:
                await services.audit.record(
                    AuditRecord(
                        kind="account_link",
                        outcome="succeeded",
                        team=result.identity.team,
                        user=result.identity.user,
                        sub=result.identity.sub,
                    )
                )
                for turn_id in result.waiting:
                    queues.enqueue_turn(turn_id, "linked")

            services.linking._on_linked = on_linked
            state["on_connected"] = lambda done: _answer_waiting(queues, done)
            state["services"] = services
            state["queues"] = queues
            state["bolt"] = AsyncSlackRequestHandler(build_bolt(settings, bot, services, queues))
            yield

    async def slack_events(request: Request) -> Response:
        handler: AsyncSlackRequestHandler = state["bolt"]
        started = time.perf_counter()
        response = await handler.handle(request)
        metrics = state["services"].metrics
        metrics.inc("chatops_slack_acks_total", {"status": str(response.status_code)})
        metrics.observe("chatops_slack_ack_seconds", {}, time.perf_counter() - started)
        return response

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        services: Services = state["services"]
        checks: dict[str, str] = {}
        try:
            await services.redis.ping()
            checks["redis"] = "ok"
        except (RedisError, OSError) as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        try:
            answer = await services.http.get(
                str(settings.registry_url).rstrip("/") + "/v0.1/servers", params={"limit": 1}, timeout=3
            )
            checks["registry"] = "ok" if answer.status_code == 200 else f"error: HTTP {answer.status_code}"
        except httpx2.HTTPError as exc:
            checks["registry"] = f"error: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return Response(
            json.dumps({"ready": ready, **checks}),
            status_code=200 if ready else 503,
            media_type="application/json",
        )

    async def metrics(_: Request) -> Response:
        # The deployment's metrics live in Redis (every web and worker process writes there); this
        # process's own runtime metrics (process_*, python_*) from the default registry are appended.
        from bot.metrics import scrape

        services: Services = state["services"]
        await services.metrics.flush()  # what this process counted a moment ago is in the answer too
        return Response(await scrape(services.redis) + generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes = [
        *LinkRoutes(lambda: state["services"], settings.base_url).routes(),
        *ServerRoutes(
            lambda: state["services"], settings.base_url, lambda done: state["on_connected"](done)
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


async def _answer_waiting(queues: Queues, done: ServerConnected) -> None:
    """The requests that waited for this server's connection run again, now with its tools (a new attempt
    each: a request may wait for two servers in turn)."""
    for turn_id in done.waiting:
        queues.enqueue_turn(turn_id, f"connected-{secrets.token_hex(4)}")


def json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
