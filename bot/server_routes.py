"""The browser side of connecting an `auth: oauth` server (SPEC §5): GET /oauth/server-start/<offer>,
GET /oauth/server-callback (the redirect URI registered at those servers' authorization servers) and
GET /oauth/client-metadata.json (the bot's Client ID Metadata Document, at PUBLIC_URL).

As with account linking (bot.link_routes), the start puts a fresh random secret in a cookie of its own
(HttpOnly, SameSite=Lax, Secure under https, Path=/oauth) and only its fingerprint goes into the `state`:
a callback that arrives in another browser (a login CSRF: someone else's sign-in at the server landing on
this person) connects nobody. Every callback that connects nothing is audited (server_connect / denied)
and says what happened on the page; the waiting requests of one that connects are handed to `on_connected`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from approvals.audit import Audit, link_record
from bot.link_routes import PAGE_HEADERS, html_response, set_browser_cookie
from bot.pages import page
from flows.link_confirm import new_browser_secret
from flows.server_linking import ServerConnected, ServerLinking, StartFailed
from mcp_clients.server_oauth import STATE_TTL_SECONDS
from mcp_clients.server_oauth_clients import CALLBACK_PATH, CLIENT_METADATA_PATH, client_metadata_document
from mcp_clients.server_oauth_errors import ConnectFailed

__all__ = ["SERVER_COOKIE", "ServerRoutes"]

log = logging.getLogger(__name__)

SERVER_COOKIE = "chatops_server"
OnConnected = Callable[[ServerConnected], Awaitable[None]]


class ServerRoutes:
    def __init__(
        self, ports: Callable[[], tuple[ServerLinking, Audit]], public_url: str, on_connected: OnConnected
    ) -> None:
        # Called per request: the web app's server linking and audit exist once its lifespan has started.
        self._ports = ports
        self._public_url = public_url.rstrip("/")
        self._secure = self._public_url.startswith("https://")
        self._cookie_path = urlsplit(self._public_url).path.rstrip("/") + "/oauth"
        self._on_connected = on_connected

    def routes(self) -> list[Route]:
        return [
            Route("/oauth/server-start/{offer}", self.start, methods=["GET"]),
            Route(CALLBACK_PATH, self.callback, methods=["GET"]),
            Route(CLIENT_METADATA_PATH, self.client_metadata, methods=["GET"]),
        ]

    async def client_metadata(self, _: Request) -> Response:
        return JSONResponse(
            client_metadata_document(self._public_url), headers={"Cache-Control": "public, max-age=3600"}
        )

    async def start(self, request: Request) -> Response:
        secret = new_browser_secret()
        try:
            url = await self._ports()[0].start(request.path_params["offer"], browser=secret)
        except StartFailed as exc:
            return html_response(page("This link cannot be used", str(exc), ok=False), 400)
        response = RedirectResponse(url, status_code=302, headers=PAGE_HEADERS)
        set_browser_cookie(
            response,
            SERVER_COOKIE,
            secret,
            max_age=STATE_TTL_SECONDS,
            path=self._cookie_path,
            secure=self._secure,
        )
        return response

    async def callback(self, request: Request) -> Response:
        q = request.query_params
        linking, audit = self._ports()
        try:
            done = await linking.finish(
                state=q.get("state"),
                code=q.get("code"),
                iss=q.get("iss"),
                error=q.get("error"),
                browser=request.cookies.get(SERVER_COOKIE),
            )
        except ConnectFailed as exc:
            log.warning("server connection refused for %s: %s", exc.user or "unknown user", exc.reason)
            record = link_record(
                "server_connect", "denied", team=exc.team, user=exc.user, server=exc.server, detail=exc.reason
            )
            await audit.record(record)
            return html_response(page("Nothing was connected", str(exc), ok=False), 400)
        connected = done.connected
        await audit.record(
            link_record(
                "server_connect",
                "succeeded",
                team=connected.team,
                user=connected.user,
                server=connected.server,
            )
        )
        await self._on_connected(done)
        waiting = " I'm answering your waiting question now." if done.waiting else ""
        message = f"The bot can now use {connected.short_name} as you, and only there.{waiting}"
        response = html_response(page(f"You're connected to {connected.short_name}", message, ok=True), 200)
        response.delete_cookie(SERVER_COOKIE, path=self._cookie_path, secure=self._secure, httponly=True)
        return response
