"""The browser side of account linking (SPEC §4, §5): GET /oauth/start/<offer>, GET /oauth/callback and,
with OAUTH_MATCH_EMAIL=false, POST /oauth/confirm.

`/oauth/start` puts a fresh random secret in a cookie (HttpOnly, SameSite=Lax so that the provider's
top-level redirect back still carries it, Secure when PUBLIC_URL is https, Path=/oauth, gone in minutes);
flows.linking keeps only its fingerprint in the `state`. Every refusal that may be someone else's sign-in
(`LinkDenied`) is audited as account_link / denied. Linking pages are never cached, framed (the confirm
button would be a clickjacking target) or referred onwards (the callback's query holds the code).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from approvals.audit import Audit, link_record
from bot.pages import confirm_page, page
from flows.link_confirm import CONFIRM_TTL_SECONDS, new_browser_secret
from flows.linking import STATE_TTL_SECONDS, Confirmation, LinkDenied, LinkFailed, Linking, LinkResult

__all__ = ["BROWSER_COOKIE", "PAGE_HEADERS", "LinkRoutes", "html_response", "set_browser_cookie"]

log = logging.getLogger(__name__)

BROWSER_COOKIE = "chatops_link"
MAX_FORM_BYTES = 4096
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class LinkRoutes:
    def __init__(self, ports: Callable[[], tuple[Linking, Audit]], public_url: str) -> None:
        # Called per request: the web app's linking and audit exist once its lifespan has started.
        self._ports = ports
        self._public_url = public_url.rstrip("/")
        self._secure = self._public_url.startswith("https://")
        # Behind a path prefix (PUBLIC_URL=https://host/chatops) the browser sees /chatops/oauth/...
        self._cookie_path = urlsplit(self._public_url).path.rstrip("/") + "/oauth"

    def routes(self) -> list[Route]:
        return [
            Route("/oauth/start/{offer}", self.start, methods=["GET"]),
            Route("/oauth/callback", self.callback, methods=["GET"]),
            Route("/oauth/confirm", self.confirm, methods=["POST"]),
        ]

    async def start(self, request: Request) -> Response:
        secret = new_browser_secret()
        try:
            url = await self._ports()[0].start(request.path_params["offer"], browser=secret)
        except LinkFailed as exc:
            return html_response(page("This link cannot be used", str(exc), ok=False), 400)
        response = RedirectResponse(url, status_code=302)
        self._set_cookie(response, secret, STATE_TTL_SECONDS)
        return response

    async def callback(self, request: Request) -> Response:
        q = request.query_params
        browser = request.cookies.get(BROWSER_COOKIE)
        try:
            outcome = await self._ports()[0].finish(
                state=q.get("state"),
                code=q.get("code"),
                iss=q.get("iss"),
                error=q.get("error"),
                browser=browser,
            )
        except LinkFailed as exc:
            return await self._refused(exc)
        if isinstance(outcome, Confirmation):
            html = confirm_page(
                slack_name=outcome.slack_name,
                signed_in_as=outcome.signed_in_as,
                action=f"{self._public_url}/oauth/confirm",
                pending=outcome.pending,
                csrf=outcome.csrf,
            )
            response = html_response(html, 200)
            self._set_cookie(response, browser or "", CONFIRM_TTL_SECONDS)  # long enough to decide
            return response
        return self._connected(outcome)

    async def confirm(self, request: Request) -> Response:
        form = await _form(request)
        try:
            result = await self._ports()[0].confirm(
                pending=form.get("pending", ""),
                csrf=form.get("csrf"),
                browser=request.cookies.get(BROWSER_COOKIE),
            )
        except LinkFailed as exc:
            return await self._refused(exc)
        return self._connected(result)

    def _connected(self, result: LinkResult) -> Response:
        who = result.identity.email or result.identity.sub
        waiting = " I'm answering your waiting question now." if result.waiting else ""
        response = html_response(
            page("You're connected", f"Slack now knows you as {who}.{waiting}", ok=True), 200
        )
        response.delete_cookie(BROWSER_COOKIE, path=self._cookie_path, secure=self._secure, httponly=True)
        return response

    async def _refused(self, exc: LinkFailed) -> Response:
        if isinstance(exc, LinkDenied):
            log.warning("account link refused for %s: %s", exc.user or "unknown user", exc.reason)
            record = link_record(
                "account_link", "denied", team=exc.team, user=exc.user, sub=exc.sub, detail=exc.reason
            )
            await self._ports()[1].record(record)
        return html_response(page("Your account was not connected", str(exc), ok=False), 400)

    def _set_cookie(self, response: Response, secret: str, max_age: int) -> None:
        set_browser_cookie(
            response, BROWSER_COOKIE, secret, max_age=max_age, path=self._cookie_path, secure=self._secure
        )


def set_browser_cookie(
    response: Response, name: str, secret: str, *, max_age: int, path: str, secure: bool
) -> None:
    """The secret that binds a sign-in to the browser that started it: HttpOnly, and SameSite=Lax so that the
    provider's top-level redirect back still carries it."""
    response.set_cookie(
        name, secret, max_age=max_age, path=path, secure=secure, httponly=True, samesite="lax"
    )


def html_response(content: str, status: int) -> HTMLResponse:
    return HTMLResponse(content, status_code=status, headers=PAGE_HEADERS)


async def _form(request: Request) -> dict[str, str]:
    """The confirm form's fields; anything else (another content type, an oversized body) reads as empty,
    which the CSRF check then refuses."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
