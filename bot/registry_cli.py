"""`chatops registry`: what the registry offers, and what one person would get from it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from redis.utils import str_if_bytes

from bot.redis_clients import async_client
from bot.settings import Settings
from mcp_clients.egress import outbound_client
from mcp_clients.listing import ListingCache
from registry_cache.client import RegistryFetchError, read_registry
from registry_cache.model import ServerEntry, parse_entries
from registry_cache.remotes import header_values
from registry_cache.view import NOBODY_MAY_APPROVE, Person, RegistryView

__all__ = ["show_registry"]


async def _person(settings: Settings, as_who: str) -> Person:
    if "@" not in as_who:
        return Person("(groups)", "", frozenset(g.strip() for g in as_who.split(",") if g.strip()))
    if settings.redis_url:
        redis = async_client(settings.redis_url)
        try:
            async for key in redis.scan_iter(match="chatops:link:*", count=500):
                raw = await redis.hgetall(key)
                data = {str_if_bytes(k): str_if_bytes(v) for k, v in raw.items()}
                if data.get("email", "").lower() == as_who.lower():
                    return Person(data["sub"], as_who, frozenset(json.loads(data["groups"])))
        finally:
            await redis.aclose()
    raise SystemExit(f"chatops: no linked person with email {as_who}; pass their groups instead (--as a,b)")


def _headers(entry: ServerEntry) -> str:
    """Which headers the server gets and where from (never their values), or why it cannot be called here."""
    if not entry.headers:
        return ""
    sources = ",".join(f"{h.name}<-{h.env}" if h.env else f"{h.name}(registry)" for h in entry.headers)
    values = header_values(entry.headers, os.environ)
    return f" headers={sources}" + (f"  CANNOT CALL HERE: {values}" if isinstance(values, str) else "")


async def _last_listings(settings: Settings, entries: Sequence[ServerEntry]) -> dict[str, dict[str, str]]:
    """server -> tool -> why, for what each server's last live listing withheld (kept in Redis)."""
    if not settings.redis_url or not entries:
        return {}
    redis = async_client(settings.redis_url)
    try:
        return await ListingCache(redis).withheld([(e.name, e.url) for e in entries])
    finally:
        await redis.aclose()


def _printable(text: str, most: int = 200) -> str:
    # Tool names and reasons come from servers: nothing of theirs may drive the operator's terminal.
    flat = "".join(c if c.isprintable() else "?" for c in text)
    return flat if len(flat) <= most else flat[: most - 1] + "…"


def _print_entry(
    view: RegistryView,
    entry: ServerEntry,
    person: Person | None,
    channel: str | None,
    withheld: dict[str, str],
) -> None:
    gov = entry.governance
    line = f"{entry.name:32} {gov.status:10} owner={gov.owner_team or '-':16} auth={gov.auth:7}"
    line += f" groups={','.join(gov.allowed_groups) or '(nobody)'}"
    if gov.allowed_channels:
        line += f" channels={','.join(gov.allowed_channels)}"
    line += _headers(entry)
    if person is not None:
        access = view.access(person, entry, channel)
        line += "  -> " + ("yes" if access.allowed else f"no: {access.reason}")
    print(line)
    if not gov.approver_groups:  # SPEC §6: such tools are withheld from the model, and this says why
        print(f"    {'(tools needing approval)':28} WITHHELD: {NOBODY_MAY_APPROVE}")
    for tool, policy in sorted(gov.tools.items()):
        bits = ["disabled" if not policy.enabled else f"approval={policy.approval or 'by annotations'}"]
        if policy.approver_groups:
            bits.append(f"approvers={','.join(policy.approver_groups)}")
        if policy.quorum:
            bits.append(f"quorum={policy.quorum}")
        if policy.enabled and view.approval(entry, tool, read_only_hint=None).unapprovable:
            when = "WITHHELD" if policy.approval == "required" else "WITHHELD unless annotated read-only"
            bits.append(f"{when}: {NOBODY_MAY_APPROVE}")
        print(f"    {tool:28} {' '.join(bits)}")
    for tool, why in sorted(withheld.items()):
        print(f"    {_printable(tool, 60):28} WITHHELD (its last listing): {_printable(why)}")


async def show_registry(settings: Settings, *, as_who: str | None, channel: str | None) -> int:
    async with outbound_client(timeout=10) as http:
        try:
            read = await read_registry(http, str(settings.registry_url))
        except RegistryFetchError as exc:
            print(f"chatops: {exc}", file=sys.stderr)
            return 1
    entries, skipped = parse_entries(read.entries)
    view = RegistryView(entries, skipped)
    person = await _person(settings, as_who) if as_who else None
    withheld = await _last_listings(settings, view.entries)
    for entry in view.entries:
        _print_entry(view, entry, person, channel, withheld.get(entry.name, {}))
    for skip in view.skipped:
        print(f"skipped {skip.name}: {skip.reason}")
    for problem in read.problems:
        print(f"left out of the registry's answer: {problem}")
    return 0
