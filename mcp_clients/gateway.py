"""The tool gateway: what this person may call, in this channel, and the calls themselves (SPEC §5-§6).

A `GatewaySession` belongs to one caller for one agent turn (or workflow run). It lists only the tools the
registry lets this person use here, names them for the model, and calls each server with a token issued to
this person for that server (or the bot's service token for `auth: service`, or nothing for `auth: none`).
A call to a tool that was not listed is refused locally: nothing reaches the server.

Failures are data, and each server's are its own (SPEC §6 "Totality"). `call()` never raises: every ending
is a `ToolOutcome` (mcp_clients/calling.py says which kind means what; the agent hands errors to the model
as `is_error`). A server whose listing fails (unreachable, slow past `list_timeout`, not JSON, too large,
malformed as a whole) is `unavailable` with the reason; tools its listing gets wrong one by one, poisoned
definitions and schemas the model API cannot take are `withheld` with the reason (the turn audits them,
and the last live listing's are kept for App Home and `chatops registry`); the rest of that server and
every other server go on. A server that keeps failing trips a short circuit breaker: a dead server costs
one timeout, not one per call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mcp import MCPError
from mcp.types import Tool

from mcp_clients.body_cap import DEFAULT_MAX_BODY_BYTES
from mcp_clients.breaker import Breaker
from mcp_clients.caller import Caller
from mcp_clients.calling import (
    CALL_MADE_EFFECT_UNKNOWN,
    HEALTHY_KINDS,
    IDEMPOTENCY_META_KEY,
    Ended,
    call_tool,
)
from mcp_clients.connection import ConnectError, Connection
from mcp_clients.dialing import Dialer, NotCallable, list_all
from mcp_clients.egress import Resolver
from mcp_clients.gateway_auth import CallerAuth
from mcp_clients.listing import ListingCache
from mcp_clients.poisoning import CREDENTIAL_REFUSAL, credential_in_arguments
from mcp_clients.questions import Attention, progress_callback
from mcp_clients.server_oauth import PerServerAuth
from mcp_clients.specs import Built, ToolOutcome, ToolSpec, build_specs, stale_specs
from mcp_clients.tokens import TokenBroker, TokenUnavailable
from mcp_clients.withholding import Withholding
from registry_cache.model import ServerEntry
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot
from registry_cache.view import RegistryView

__all__ = [
    "CALL_MADE_EFFECT_UNKNOWN",
    "IDEMPOTENCY_META_KEY",
    "Breaker",
    "Caller",
    "Gateway",
    "GatewaySession",
    "NotCallable",
    "ToolOutcome",
    "ToolSpec",
]

log = logging.getLogger(__name__)

SERVER_CHANGED = "{server} changed its URL or resource in the registry since its tools were listed; ask again"
VIEW_REUSE_SECONDS = 1.0
# A background re-listing starts this long after the listing was served from memory: it shares the turn's
# event loop, and the turn's first model request (a few ms of work) should be on the wire before it.
RELIST_AFTER_SECONDS = 0.03
SPEC_MEMO_SIZE = 1024  # distinct server listings a long-lived process keeps built
LIST_TIMEOUT_SECONDS = 15.0  # one slow server's listing may not hold every turn longer than this
# What one server's listing can fail with; anything else is a bug of ours or the SDK's, still its own.
LISTING_FAILURES = (ConnectError, MCPError, TokenUnavailable, OSError, TimeoutError)


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
        server_auth: PerServerAuth | None = None,  # None: `auth: oauth` servers cannot be used
        environ: Mapping[str, str] | None = None,
        list_timeout: float = LIST_TIMEOUT_SECONDS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.snapshot = snapshot
        self.server_auth = server_auth
        self.resolver = resolver  # None: the system's; tests give names addresses without DNS
        self.list_timeout = list_timeout
        self.broker = broker
        self.listings = listings  # None: every session lists every server live
        self.call_timeout = call_timeout
        self.output_max_chars = output_max_chars
        self.breaker = breaker or Breaker()
        environ = os.environ if environ is None else environ  # where remote header values are read
        self.dialer = Dialer(call_timeout, resolver, environ, max_body_bytes)
        # (server, url, listing) -> (view, tools, built): see GatewaySession._remembered_specs
        self.spec_memo: dict[tuple[str, str, int], tuple[RegistryView, tuple[Tool, ...], Built]] = {}

    def session(self, caller: Caller, attention: Attention | None = None) -> GatewaySession:
        return GatewaySession(self, caller, attention)


class GatewaySession:
    def __init__(self, gateway: Gateway, caller: Caller, attention: Attention | None = None) -> None:
        self._gw = gateway
        self.caller = caller
        self.attention = attention  # who hears its servers' questions and progress (mcp_clients/questions.py)
        self._connections: dict[str, Connection] = {}
        self._specs: dict[str, ToolSpec] = {}
        self.unavailable: dict[str, str] = {}  # server -> why its tools are missing this turn
        self._view: tuple[RegistryView, float] | None = None
        self._withholding = Withholding()
        self.disabled = self._withholding.disabled  # model name -> why (mcp_clients/withholding.py)
        self.withheld = self._withholding.withheld  # model name -> (server, tool, why)
        # server -> a background re-listing of a remembered listing: model name -> why it may not be called
        self._revalidating: dict[str, asyncio.Task[dict[str, str]]] = {}
        self._listed: tuple[ToolSpec, ...] | None = None
        self.auth = CallerAuth(caller, gateway.broker, gateway.server_auth)
        self.connect_needed = self.auth.connect_needed  # server -> ConnectNeeded: offer "Connect <server>"

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

    def _connection(self, entry: ServerEntry) -> Connection:
        """This session's connection to `entry`. Raises `NotCallable` when its headers cannot be sent."""
        conn = self._connections.get(entry.name)
        if conn is None or conn.url != entry.url:
            # its tokens go to this server at this URL, and only there
            conn = self._gw.dialer.dial(entry, self.auth.flow(entry), self.attention)
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
        specs = self._withholding.uniquely_named([spec for group in listed for spec in group])
        self._specs = {s.model_name: s for s in specs}
        self._listed = tuple(specs)
        return specs

    def _listing_key(self, entry: ServerEntry) -> str:
        mode = self.auth.mode(entry)
        who = self.caller.identity.sub if mode in ("user", "oauth") else mode
        return ListingCache.key(entry.name, entry.url, who)

    async def _list(self, view: RegistryView, entry: ServerEntry, fresh: bool) -> list[ToolSpec]:
        if self._gw.breaker.is_open(entry.name):
            self.unavailable[entry.name] = "temporarily unavailable after repeated failures"
            return []
        blocked = await self.auth.unconnected(entry)
        if blocked is not None:  # a person who has not connected it: nothing is sent to it
            self.unavailable[entry.name] = blocked
            return []
        cache = self._gw.listings
        if cache is not None and not fresh:
            remembered = await cache.lookup(
                self._listing_key(entry),
                ListingCache.down_key(entry.name, entry.url),
                ListingCache.withheld_key(entry.name, entry.url),
            )
            if remembered.down is not None:  # found unreachable seconds ago: don't wait for it again
                self.unavailable[entry.name] = f"unreachable a moment ago ({remembered.down})"
                return []
            if remembered.listing is not None:
                self._withholding.malformed(entry, remembered.withheld)
                specs = self._remembered_specs(view, entry, remembered.listing.tools)
                self._revalidating[entry.name] = asyncio.create_task(
                    self._revalidate(view, entry, specs), name=f"relist {entry.name}"
                )
                return specs
        listed = await self._listed_live(entry)
        if listed is None:
            return []
        specs = self._specs_of(view, entry, listed)
        await self._remember_withheld(entry)
        return specs

    async def _listed_live(self, entry: ServerEntry) -> list[Tool] | None:
        """`entry`'s tools, listed now (remembered for others, with what was withheld), or None with the
        reason in `unavailable`. Whatever the server answers, it fails only itself."""
        cache = self._gw.listings
        try:
            tools, malformed = await asyncio.wait_for(self._fetch(entry), self._gw.list_timeout)
        except Exception as exc:  # LISTING_FAILURES, and anything else: one server's listing is its own
            mine = await self._auth_failure(entry, exc)
            if mine is not None or isinstance(exc, TokenUnavailable):  # the caller's token, not the server
                self.unavailable[entry.name] = mine[0] if mine else str(exc)
                return None
            self._gw.breaker.record(entry.name, ok=False)
            reason = self._listing_failure(entry, exc)
            self.unavailable[entry.name] = reason
            await self._mark_down(entry, exc, reason)
            return None
        self._gw.breaker.record(entry.name, ok=True)
        self._withholding.malformed(entry, malformed)
        if cache is not None:
            await cache.put(self._listing_key(entry), tools)
        return tools

    async def _auth_failure(self, entry: ServerEntry, exc: BaseException) -> tuple[str, str] | None:
        conn = self._connections.get(entry.name)
        return await self.auth.failure(entry, conn.auth if conn else None, exc)

    async def _mark_down(self, entry: ServerEntry, exc: Exception, reason: str) -> None:
        """Unreachable or too slow: other processes skip it for a while instead of waiting on it too."""
        unreachable = isinstance(exc, (ConnectError, OSError, TimeoutError)) and not isinstance(
            exc, NotCallable
        )
        if self._gw.listings is not None and unreachable:
            await self._gw.listings.mark_down(ListingCache.down_key(entry.name, entry.url), reason)

    def _listing_failure(self, entry: ServerEntry, exc: Exception) -> str:
        if isinstance(exc, TimeoutError):
            return f"it did not list its tools within {self._gw.list_timeout:g} s"
        conn = self._connections.get(entry.name)
        if conn is not None and conn.breach.message is not None:
            return conn.breach.message
        if not isinstance(exc, LISTING_FAILURES):
            log.warning("listing %s failed unexpectedly", entry.name, exc_info=True)
            return f"its tools could not be read ({type(exc).__name__})"
        return str(exc) or type(exc).__name__

    async def _fetch(self, entry: ServerEntry) -> tuple[list[Tool], dict[str, str]]:
        return await list_all(self._connection(entry))

    async def _revalidate(
        self, view: RegistryView, entry: ServerEntry, shown: list[ToolSpec]
    ) -> dict[str, str]:
        """List `entry` live and return the tools shown from memory that may no longer be called, with
        why. A server that cannot be listed now changes nothing here: its calls fail on their own."""
        await asyncio.sleep(RELIST_AFTER_SECONDS)
        try:
            tools, malformed = await asyncio.wait_for(self._fetch(entry), self._gw.list_timeout)
        except Exception as exc:  # whatever the server answers: it is only this re-listing that failed
            reason = self._listing_failure(entry, exc)
            log.info("re-listing %s failed: %s", entry.name, reason)
            await self._mark_down(entry, exc, reason)
            return {}
        self._withholding.malformed(entry, malformed)
        listed = tuple(tools)
        if self._gw.listings is not None:  # unchanged, it is the remembered tuple: nothing is built again
            listed = await self._gw.listings.put(self._listing_key(entry), tools)
        live = {s.model_name: s for s in self._remembered_specs(view, entry, listed)}
        await self._remember_withheld(entry)
        return stale_specs(shown, live, self.disabled, entry.short_name)

    def _specs_of(self, view: RegistryView, entry: ServerEntry, tools: Sequence[Tool]) -> list[ToolSpec]:
        built = build_specs(view, entry, tools)
        self._withholding.built(entry, built)
        return self._withholding.unapprovable(entry, built.specs)

    def _remembered_specs(
        self, view: RegistryView, entry: ServerEntry, tools: tuple[Tool, ...]
    ) -> list[ToolSpec]:
        """`_specs_of` a remembered listing, built once per (listing, registry version) in this process:
        checking and fingerprinting every tool of every server was most of a warm turn's wait before its
        first model request. ListingCache hands out the same tools tuple for the same stored tools, so
        everyone shown the same listing of a server shares what is built from it (the memo entry holds
        the tuple, so its id is not reused while it is a key)."""
        memo = self._gw.spec_memo
        key = (entry.name, entry.url, id(tools))
        known = memo.get(key)
        if known is not None and known[0] is view and known[1] is tools:
            built = known[2]
        else:
            built = build_specs(view, entry, tools)
            if len(memo) >= SPEC_MEMO_SIZE:
                del memo[next(iter(memo))]  # the oldest entry: a bound, not an LRU
            memo[key] = (view, tools, built)
        self._withholding.built(entry, built)
        return self._withholding.unapprovable(entry, built.specs)

    async def _remember_withheld(self, entry: ServerEntry) -> None:
        """What a live listing withheld of `entry` for its definitions, for turns served from memory, App
        Home and `chatops registry`."""
        if self._gw.listings is not None:
            key = ListingCache.withheld_key(entry.name, entry.url)
            await self._gw.listings.put_withheld(key, self._withholding.of_server(entry.name))

    def spec(self, model_name: str) -> ToolSpec | None:
        return self._specs.get(model_name)

    async def call(
        self, model_name: str, arguments: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> ToolOutcome:
        """Call a listed tool with this caller's identity. Never raises (but for cancellation): whatever the
        server, the registry or Redis does, the answer is a `ToolOutcome`.

        `idempotency_key` travels in the request's `_meta` (IDEMPOTENCY_META_KEY) so a server that supports
        it can refuse to perform the same approved action twice."""
        started = time.monotonic()
        try:
            refused = await self._refusal(model_name, arguments)
        except Exception as exc:  # before anything was sent: the registry copy or Redis failed us
            log.warning("call of %s not made: %s", model_name, type(exc).__name__, exc_info=True)
            return ToolOutcome(
                False, f"{model_name} could not be called just now; nothing ran.", error_kind="refused"
            )
        if isinstance(refused, ToolOutcome):
            return refused
        entry, spec = refused
        if self._gw.breaker.is_open(entry.name):
            return ToolOutcome(
                False,
                f"{entry.short_name} is temporarily unavailable after repeated failures.",
                error_kind="unavailable",
            )
        try:
            conn = self._connection(entry)
        except NotCallable as exc:
            return ToolOutcome(False, f"{entry.short_name} cannot be called: {exc}", error_kind="unavailable")
        ended = await call_tool(
            conn,
            entry.short_name,
            spec.tool,
            arguments,
            timeout=self._gw.call_timeout,
            max_chars=self._gw.output_max_chars,
            idempotency_key=idempotency_key,
            auth_failure=lambda exc: self._auth_failure(entry, exc),
            progress=progress_callback(self.attention, entry.short_name, spec.tool),
        )
        return self._outcome(entry, ended, started)

    async def _refusal(
        self, model_name: str, arguments: Mapping[str, Any]
    ) -> ToolOutcome | tuple[ServerEntry, ToolSpec]:
        """Why this call must not reach the server (an outcome), or the entry and tool it goes to."""
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
        return entry, spec

    def _outcome(self, entry: ServerEntry, ended: Ended, started: float) -> ToolOutcome:
        self._gw.breaker.record(entry.name, ok=ended.ok or ended.kind in HEALTHY_KINDS)
        latency = (time.monotonic() - started) * 1000
        return ToolOutcome(ended.ok, ended.text, ended.structured, ended.truncated, latency, ended.kind)
