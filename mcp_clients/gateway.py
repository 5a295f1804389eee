"""The tool gateway: what this person may call, in this channel, and the calls themselves (SPEC §5-§6).

A `GatewaySession` belongs to one caller for one agent turn (or workflow run). It lists only the tools the
registry lets this person use here, names them for the model, and calls each server with a token issued to
this person for that server (or the bot's service token for `auth: service`, or nothing for `auth: none`).
A call to a tool that was not listed is refused locally: nothing reaches the server.

Failures are data: every call returns a `ToolOutcome` (the agent hands errors to the model as `is_error`).
A server that keeps failing trips a short circuit breaker: a dead server costs one timeout, not one per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mcp import MCPError
from mcp.types import RequestParamsMeta, Tool

from mcp_clients.breaker import Breaker
from mcp_clients.connection import BearerFlow, ConnectError, Connection
from mcp_clients.egress import Resolver
from mcp_clients.listing import Listing, ListingCache
from mcp_clients.naming import ToolKey, model_tool_name
from mcp_clients.poisoning import CREDENTIAL_REFUSAL, credential_in_arguments
from mcp_clients.specs import ToolOutcome, ToolSpec, build_specs, render_result, uniquely_named
from mcp_clients.tokens import Audience, Identity, TokenBroker, TokenUnavailable
from registry_cache.model import ServerEntry
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot
from registry_cache.view import NOBODY_MAY_APPROVE, Person, RegistryView

__all__ = ["Breaker", "Caller", "Gateway", "GatewaySession", "ToolOutcome", "ToolSpec"]

log = logging.getLogger(__name__)

IDEMPOTENCY_META_KEY = "io.chatops/idempotency-key"
SERVER_CHANGED = "{server} changed its URL or resource in the registry since its tools were listed; ask again"
VIEW_REUSE_SECONDS = 1.0
# A background re-listing starts this long after the listing was served from memory: it shares the turn's
# event loop, and the turn's first model request (a few ms of work) should be on the wire before it.
RELIST_AFTER_SECONDS = 0.03
SPEC_MEMO_SIZE = 1024  # distinct server listings a long-lived process keeps built


@dataclass(frozen=True)
class Caller:
    team: str
    user: str
    channel: str | None
    identity: Identity
    service: bool = (
        False  # call every server with the bot's service identity (workflows with identity: service)
    )

    @property
    def person(self) -> Person:
        return Person(self.identity.sub, self.identity.email, self.identity.groups)


class Gateway:
    def __init__(
        self,
        snapshot: SharedSnapshot,
        broker: TokenBroker,
        *,
        call_timeout: float = 60.0,
        output_max_chars: int = 20_000,
        breaker: Breaker | None = None,
        listings: ListingCache | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.resolver = resolver  # None: the system's; tests give names addresses without DNS
        self.broker = broker
        self.listings = listings  # None: every session lists every server live
        self.call_timeout = call_timeout
        self.output_max_chars = output_max_chars
        self.breaker = breaker or Breaker()
        # (server, url, listing) -> (view, tools, specs, poisoned): see GatewaySession._remembered_specs
        self.spec_memo: dict[
            tuple[str, str, int],
            tuple[RegistryView, tuple[Tool, ...], list[ToolSpec], dict[str, tuple[str, str]]],
        ] = {}

    def session(self, caller: Caller) -> GatewaySession:
        return GatewaySession(self, caller)


class GatewaySession:
    def __init__(self, gateway: Gateway, caller: Caller) -> None:
        self._gw = gateway
        self.caller = caller
        self._connections: dict[str, Connection] = {}
        self._specs: dict[str, ToolSpec] = {}
        self.unavailable: dict[str, str] = {}  # server -> why its tools are missing this turn
        self._view: tuple[RegistryView, float] | None = None
        self.disabled: dict[str, str] = {}  # model name -> why the tool was withheld (poisoning)
        # model name -> (server, tool, why) of every tool withheld from the model: poisoned or unapprovable
        self.withheld: dict[str, tuple[str, str, str]] = {}
        self._poisoned_keys: set[ToolKey] = set()
        # server -> a background re-listing of a remembered listing: model name -> why it may not be called
        self._revalidating: dict[str, asyncio.Task[dict[str, str]]] = {}
        self._listed: tuple[ToolSpec, ...] | None = None

    async def __aenter__(self) -> GatewaySession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._revalidating.values():
            task.cancel()
        await asyncio.gather(*self._revalidating.values(), return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self._connections.values()), return_exceptions=True)
        self._connections.clear()

    async def view(self) -> RegistryView:
        # Calls in one turn come in bursts; re-reading the shared snapshot for each was most of what the
        # gateway added over a bare call. A second of reuse keeps the per-call re-check meaningful.
        now = time.monotonic()
        if self._view is None or now - self._view[1] > VIEW_REUSE_SECONDS:
            self._view = (await self._gw.snapshot.view(), now)
        return self._view[0]

    def _auth_mode(self, entry: ServerEntry) -> str:
        if self.caller.service and entry.governance.auth == "user":
            return "service"
        return entry.governance.auth

    def _connection(self, entry: ServerEntry) -> Connection:
        conn = self._connections.get(entry.name)
        if conn is None or conn.url != entry.url:
            team, user = self.caller.team, self.caller.user
            audience = Audience.of(entry)
            broker = self._gw.broker
            auth_mode = self._auth_mode(entry)

            async def token() -> str | None:
                if auth_mode == "none":
                    return None
                if auth_mode == "service":
                    return await broker.service_token(audience)
                return await broker.user_token(team, user, audience)

            async def invalidate() -> None:
                if auth_mode == "user":
                    await broker.invalidate(team, user, audience)

            flow = BearerFlow(token, invalidate)
            conn = Connection(entry.url, flow, timeout=self._gw.call_timeout, resolver=self._gw.resolver)
            self._connections[entry.name] = conn
        return conn

    async def tools(self, *, fresh: bool = False) -> list[ToolSpec]:
        """Every tool this caller may use here. Raises `RegistryUnavailable` when no copy may be used.

        Which servers comes from the registry view every time; what each server lists may come from a
        listing remembered for this caller (`ListingCache`), re-listed in the background while the turn
        goes on. `fresh=True` lists every server live (an approved action checks the live definition)."""
        if self._listed is not None and not fresh:  # once per session: a turn asks more than once
            return list(self._listed)
        view = await self.view()
        entries = view.servers_for(self.caller.person, self.caller.channel)
        listed = await asyncio.gather(*(self._list(view, e, fresh) for e in entries))
        specs = self._uniquely_named([spec for group in listed for spec in group])
        self._specs = {s.model_name: s for s in specs}
        self._listed = tuple(specs)
        return specs

    def _uniquely_named(self, specs: list[ToolSpec]) -> list[ToolSpec]:
        offered, withheld = uniquely_named(specs, self._poisoned_keys)
        for key, why in withheld.items():
            log.warning("tool %s of %s withheld from the model: %s", key.tool, key.server, why)
            name = model_tool_name(key.server, key.short_name, key.tool)
            self.disabled.setdefault(name, why)
            self.withheld.setdefault(name, (key.server, key.tool, why))
        return offered

    def _listing_key(self, entry: ServerEntry) -> str:
        mode = self._auth_mode(entry)
        who = self.caller.identity.sub if mode == "user" else mode
        return ListingCache.key(entry.name, entry.url, who)

    async def _list(self, view: RegistryView, entry: ServerEntry, fresh: bool) -> list[ToolSpec]:
        if self._gw.breaker.is_open(entry.name):
            self.unavailable[entry.name] = "temporarily unavailable after repeated failures"
            return []
        cache = self._gw.listings
        down_key = ListingCache.down_key(entry.name, entry.url)
        if cache is not None and not fresh:
            remembered, down = await cache.lookup(self._listing_key(entry), down_key)
            if down is not None:  # another process found it unreachable seconds ago: don't wait for it again
                self.unavailable[entry.name] = f"unreachable a moment ago ({down})"
                return []
            if remembered is not None:
                specs = self._remembered_specs(view, entry, remembered)
                self._revalidating[entry.name] = asyncio.create_task(
                    self._revalidate(view, entry, specs), name=f"relist {entry.name}"
                )
                return specs
        try:
            tools = await self._fetch(entry)
        except (ConnectError, MCPError, TokenUnavailable, OSError) as exc:
            self._gw.breaker.record(entry.name, ok=False)
            reason = str(exc) or type(exc).__name__
            self.unavailable[entry.name] = reason
            if cache is not None and isinstance(exc, (ConnectError, OSError)):
                await cache.mark_down(down_key, reason)
            return []
        self._gw.breaker.record(entry.name, ok=True)
        if cache is not None:
            await cache.put(self._listing_key(entry), tools)
        return self._specs_of(view, entry, tools)

    async def _fetch(self, entry: ServerEntry) -> list[Tool]:
        client = await self._connection(entry).open()
        tools: list[Tool] = []
        cursor: str | None = None
        for _ in range(20):
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def _revalidate(
        self, view: RegistryView, entry: ServerEntry, shown: list[ToolSpec]
    ) -> dict[str, str]:
        """List `entry` live and return the tools shown from memory that may no longer be called, with
        why. A server that cannot be listed now changes nothing here: its calls fail on their own."""
        await asyncio.sleep(RELIST_AFTER_SECONDS)
        try:
            tools = await self._fetch(entry)
        except (ConnectError, MCPError, TokenUnavailable, OSError) as exc:
            log.info("re-listing %s failed: %s", entry.name, exc)
            if self._gw.listings is not None and isinstance(exc, (ConnectError, OSError)):
                down_key = ListingCache.down_key(entry.name, entry.url)
                await self._gw.listings.mark_down(down_key, str(exc) or type(exc).__name__)
            return {}
        if self._gw.listings is not None:
            await self._gw.listings.put(self._listing_key(entry), tools)
        live = {s.model_name: s for s in self._specs_of(view, entry, tools)}
        stale: dict[str, str] = {}
        for spec in shown:
            now = live.get(spec.model_name)
            if spec.model_name in self.disabled:
                stale[spec.model_name] = (
                    f"{spec.tool} was withheld: its definition on {entry.short_name} changed "
                    f"({self.disabled[spec.model_name]})."
                )
            elif now is None:
                stale[spec.model_name] = f"{spec.tool} is no longer offered by {entry.short_name}."
            elif now.fingerprint != spec.fingerprint:
                stale[spec.model_name] = (
                    f"The definition of {spec.tool} on {entry.short_name} changed while I was working; "
                    "ask again so I use the current one."
                )
        return stale

    def _specs_of(self, view: RegistryView, entry: ServerEntry, tools: Sequence[Tool]) -> list[ToolSpec]:
        specs, poisoned = build_specs(view, entry, tools)
        self._note_poisoned(entry, poisoned)
        return self._offered(entry, specs)

    def _remembered_specs(self, view: RegistryView, entry: ServerEntry, listing: Listing) -> list[ToolSpec]:
        """`_specs_of` a remembered listing, built once per (listing, registry version) in this process:
        checking and fingerprinting every tool of every server was most of a warm turn's wait before its
        first model request. ListingCache hands out the same tools tuple for the same stored tools, so
        everyone shown the same listing of a server shares what is built from it (the memo entry holds
        the tuple, so its id is not reused while it is a key)."""
        memo = self._gw.spec_memo
        key = (entry.name, entry.url, id(listing.tools))
        known = memo.get(key)
        if known is not None and known[0] is view and known[1] is listing.tools:
            specs, poisoned = known[2], known[3]
        else:
            specs, poisoned = build_specs(view, entry, listing.tools)
            if len(memo) >= SPEC_MEMO_SIZE:
                del memo[next(iter(memo))]  # the oldest entry: a bound, not an LRU
            memo[key] = (view, listing.tools, specs, poisoned)
        self._note_poisoned(entry, poisoned)
        return self._offered(entry, specs)

    def _note_poisoned(self, entry: ServerEntry, poisoned: Mapping[str, tuple[str, str]]) -> None:
        for name, (tool, poison) in poisoned.items():
            log.warning("tool %s of %s withheld from the model: %s", tool, entry.name, poison)
            self.disabled[name] = poison
            self.withheld[name] = (entry.name, tool, f"its definition looks poisoned ({poison})")
            self._poisoned_keys.add(ToolKey(entry.name, entry.short_name, tool))

    def _offered(self, entry: ServerEntry, specs: Sequence[ToolSpec]) -> list[ToolSpec]:
        """`specs` without the tools that need an approval nobody may give (SPEC §6): offered, a call to one
        could only wait on a card until it expired. They are withheld, with the reason, like poisoned ones."""
        offered = []
        for spec in specs:
            if spec.approval.unapprovable:
                self.withheld[spec.model_name] = (entry.name, spec.tool, NOBODY_MAY_APPROVE)
            else:
                offered.append(spec)
        return offered

    def spec(self, model_name: str) -> ToolSpec | None:
        return self._specs.get(model_name)

    async def call(
        self, model_name: str, arguments: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> ToolOutcome:
        """Call a listed tool with this caller's identity. Never raises for tool-level failures.

        `idempotency_key` travels in the request's `_meta` (IDEMPOTENCY_META_KEY) so a server that supports
        it can refuse to perform the same approved action twice."""
        started = time.monotonic()
        spec = self._specs.get(model_name)
        if spec is None:
            return ToolOutcome(
                False, f"Tool {model_name!r} is not available to you here.", error_kind="refused"
            )
        try:
            view = await self.view()
        except RegistryUnavailable as exc:
            return ToolOutcome(False, str(exc), error_kind="refused")
        entry = view.server(spec.server)
        # Re-check at call time: the registry may have changed since the tools were listed.
        if entry is None or not view.access(self.caller.person, entry, self.caller.channel).allowed:
            return ToolOutcome(
                False, f"{spec.server} is no longer available to you here.", error_kind="refused"
            )
        if (entry.url, entry.resource) != (spec.url, spec.resource):
            # The definition was checked (and perhaps approved) at the old remote: it vouches for nothing now.
            return ToolOutcome(False, SERVER_CHANGED.format(server=spec.short_name), error_kind="refused")
        if not view.tool_enabled(entry, spec.tool):
            return ToolOutcome(False, f"{spec.tool} has been disabled by its owners.", error_kind="refused")
        if credential_in_arguments(arguments):
            log.warning("call of %s refused: its arguments look like they carry a credential", model_name)
            return ToolOutcome(False, CREDENTIAL_REFUSAL, error_kind="refused")
        relisting = self._revalidating.get(spec.server)
        if relisting is not None:  # shown from a remembered listing: only a definition still live is called
            stale = await asyncio.shield(relisting)
            if model_name in stale:
                return ToolOutcome(False, stale[model_name], error_kind="refused")
        return await self._invoke(entry, spec, arguments, started, idempotency_key)

    async def _invoke(
        self,
        entry: ServerEntry,
        spec: ToolSpec,
        arguments: Mapping[str, Any],
        started: float,
        idempotency_key: str | None,
    ) -> ToolOutcome:
        def done(
            ok: bool, text: str, kind: str | None = None, structured: Any = None, cut: bool = False
        ) -> ToolOutcome:
            self._gw.breaker.record(entry.name, ok=ok or kind in ("tool_error", "scope", "auth"))
            latency = (time.monotonic() - started) * 1000
            return ToolOutcome(ok, text, structured, cut, latency, kind)

        if self._gw.breaker.is_open(entry.name):
            return ToolOutcome(
                False,
                f"{entry.short_name} is temporarily unavailable after repeated failures.",
                error_kind="unavailable",
            )
        conn = self._connection(entry)
        try:
            client = await conn.open()
            meta: RequestParamsMeta | None = None
            if idempotency_key:
                meta = RequestParamsMeta()
                meta[IDEMPOTENCY_META_KEY] = idempotency_key  # type: ignore[literal-required]
            result = await client.call_tool(
                spec.tool, dict(arguments), read_timeout_seconds=self._gw.call_timeout, meta=meta
            )
        except TokenUnavailable as exc:
            return done(False, str(exc), "auth")
        except ConnectError as exc:
            return done(False, f"{entry.short_name} could not be reached: {exc}", "unavailable")
        except MCPError as exc:
            if conn.auth.insufficient_scope:
                return done(
                    False,
                    f"{entry.short_name} says your account lacks the scope for {spec.tool}. "
                    "Ask its owners for access, then connect again.",
                    "scope",
                )
            if conn.auth.last_status == 401:
                return done(
                    False, f"{entry.short_name} did not accept your credentials. Connect again.", "auth"
                )
            if exc.code == -32001:
                return done(
                    False,
                    f"{spec.tool} did not finish within {self._gw.call_timeout:.0f} s; "
                    "its outcome is unknown.",
                    "timeout",
                )
            return done(False, f"{entry.short_name} failed: {exc.message}", "protocol")
        except OSError as exc:
            return done(
                False, f"{entry.short_name} could not be reached ({type(exc).__name__}).", "unavailable"
            )
        text, cut = render_result(result, self._gw.output_max_chars)
        if result.is_error:
            return done(False, text, "tool_error", cut=cut)
        return done(True, text, structured=result.structured_content, cut=cut)
