"""Which credentials each of one caller's connections carries (SPEC §5), by the server's `auth`:

- `user`: the person's token from the company's identity provider, for that server alone (`TokenBroker`);
- `service`: the bot's own client-credentials token (workflows with `identity: service`, and `auth:
  service` servers);
- `none`: nothing;
- `oauth` (a server with its own authorization server): the token this person got when they connected that
  server (`PerServerAuth`), or, for a caller that is no person, the bot's client-credentials token from the
  server's pre-registered client (`oauth-service`).

A person who has not connected an `auth: oauth` server is not sent to it at all: its tools are missing from
the turn with "connect <server> first", and `connect_needed` names it (the marker the turn turns into a
"Connect <server>" button, `PerServerAuth.authorization_url` behind it). A call that fails for want of their
token (the connection ended, the server refused it) or of scope (403 `insufficient_scope`: a step-up) says
so with `error_kind="connect"`; a server that keeps asking for more than it grants is a `scope` failure, for
its owners. A person's missing or refused token is theirs alone: it never counts against the server.
"""

from __future__ import annotations

from mcp_clients.caller import Caller
from mcp_clients.connection import BearerFlow
from mcp_clients.server_oauth import PerServerAuth
from mcp_clients.server_oauth_errors import ConnectNeeded, StepUpRefused
from mcp_clients.tokens import Audience, TokenBroker, TokenUnavailable
from registry_cache.model import ServerEntry

__all__ = ["NO_SERVER_AUTH", "CallerAuth"]

NO_SERVER_AUTH = "this deployment cannot connect servers that have their own authorization server"


class CallerAuth:
    def __init__(self, caller: Caller, broker: TokenBroker, server_auth: PerServerAuth | None) -> None:
        self._caller = caller
        self._broker = broker
        self._server_auth = server_auth
        # server -> why this person must connect it first: the turn offers "Connect <server>" for each
        self.connect_needed: dict[str, ConnectNeeded] = {}

    def mode(self, entry: ServerEntry) -> str:
        auth = entry.governance.auth
        if self._caller.service and auth in ("user", "oauth"):
            return "service" if auth == "user" else "oauth-service"
        return auth

    def flow(self, entry: ServerEntry) -> BearerFlow:
        """The auth flow of a connection to `entry`: its tokens go there and nowhere else."""
        mode, server_auth = self.mode(entry), self._server_auth
        if mode == "oauth" and server_auth is not None:
            return server_auth.bearer_flow(self._caller.team, self._caller.user, entry)
        team, user, broker = self._caller.team, self._caller.user, self._broker
        audience = Audience.of(entry)  # and asked for the way the entry says (resource, scope, exchange)

        async def token() -> str | None:
            if mode in ("oauth", "oauth-service") and server_auth is None:
                raise TokenUnavailable(NO_SERVER_AUTH)
            if mode == "oauth-service":
                return await server_auth.service.token(entry)  # type: ignore[union-attr]
            if mode == "none":
                return None
            if mode == "service":
                return await broker.service_token(audience)
            return await broker.user_token(team, user, audience)

        async def invalidate() -> None:
            if mode == "user":
                await broker.invalidate(team, user, audience)
            elif mode == "oauth-service" and server_auth is not None:
                await server_auth.service.invalidate(entry)

        return BearerFlow(token, invalidate)

    async def unconnected(self, entry: ServerEntry) -> str | None:
        """Why `entry` is not to be listed for this caller at all (nothing is sent to it), or None."""
        mode = self.mode(entry)
        if mode not in ("oauth", "oauth-service"):
            return None
        if self._server_auth is None:
            return NO_SERVER_AUTH
        caller = self._caller
        if mode == "oauth" and not await self._server_auth.connected(caller.team, caller.user, entry):
            needed = ConnectNeeded(entry.name, entry.short_name)
            self.connect_needed[entry.name] = needed
            return str(needed)
        return None

    async def failure(
        self, entry: ServerEntry, flow: BearerFlow | None, exc: BaseException
    ) -> tuple[str, str] | None:
        """(what to tell the model, error kind) when a listing or call failed for want of this caller's token
        or scope; None when it was something else (the server's own failure)."""
        why: BaseException | None = exc if isinstance(exc, TokenUnavailable) else None
        if why is None and flow is not None and self.mode(entry) == "oauth" and self._server_auth is not None:
            caller = self._caller
            why = await self._server_auth.after_failure(caller.team, caller.user, entry, flow)
        if isinstance(why, ConnectNeeded):
            self.connect_needed[entry.name] = why
            return f"{entry.short_name}: {why}", "connect"
        if isinstance(why, StepUpRefused):
            return str(why), "scope"
        if isinstance(why, TokenUnavailable):
            return str(why), "auth"
        return None
