"""Read every entry from an MCP registry (`GET {REGISTRY_URL}/v0.1/servers`, cursor pagination).

A page that cannot be read at all (unreachable, not HTTP 200, not JSON, no `servers` list) fails the whole
read: serving half a registry would silently drop people's servers. What is malformed *inside* a readable
page costs only itself: every item of `servers` goes on to the parser, which skips the ones that are not
entries with a reason; an item nested too deep to store is left out, and a `metadata` or `nextCursor` of the
wrong type ends the paging there. Each of these is a `problem` the read reports (logged, and shown by
`chatops registry` and `chatops doctor`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx2

__all__ = ["RegistryFetchError", "RegistryRead", "fetch_all", "read_registry"]

log = logging.getLogger(__name__)

PAGE_SIZE = 100
MAX_PAGES = 500  # 50,000 servers: far beyond any real registry, small enough to stop a cursor loop
# Real server.json documents nest a handful of levels; the snapshot is stored as JSON and parsed by every
# process, and an entry near the JSON parser's recursion limit would break that for everyone.
MAX_DEPTH = 64


class RegistryFetchError(Exception):
    """The registry could not be read completely; the message is safe to show."""


@dataclass
class RegistryRead:
    entries: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what was malformed and left out, for operators


def _depth(value: Any) -> int:
    """How deeply `value` nests (iteratively: the point is to survive documents too deep to recurse)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


async def _page(http: httpx2.AsyncClient, base: str, params: dict[str, str | int], timeout: float) -> Any:
    try:
        response = await http.get(base, params=params, timeout=timeout)
    except httpx2.HTTPError as exc:
        # A connection refused by the URL rules says why (mcp_clients/egress.py); others name their kind.
        detail = str(exc) if isinstance(exc, httpx2.ConnectError) and str(exc) else type(exc).__name__
        raise RegistryFetchError(f"registry unreachable ({detail})") from None
    if response.status_code != 200:
        raise RegistryFetchError(f"registry answered HTTP {response.status_code}")
    try:
        return response.json()
    except (ValueError, RecursionError):
        raise RegistryFetchError("registry answered with something that is not JSON") from None


def _next_cursor(body: dict[str, Any], page: int, read: RegistryRead) -> str | None:
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        read.problems.append(f"page {page}: metadata is not an object; paging stopped there")
        return None
    cursor = metadata.get("nextCursor")
    if cursor is not None and not isinstance(cursor, str):
        read.problems.append(f"page {page}: metadata.nextCursor is not a string; paging stopped there")
        return None
    return cursor or None


async def read_registry(
    http: httpx2.AsyncClient, registry_url: str, *, timeout: float = 10.0
) -> RegistryRead:
    """Every item of every page, following `metadata.nextCursor` until it is absent, and the problems met."""
    base = registry_url.rstrip("/") + "/v0.1/servers"
    read = RegistryRead()
    cursor: str | None = None
    seen: set[str] = set()
    for page in range(1, MAX_PAGES + 1):
        params: dict[str, str | int] = {"limit": PAGE_SIZE}
        if cursor:
            params["cursor"] = cursor
        body = await _page(http, base, params, timeout)
        servers = body.get("servers") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(servers, list):
            raise RegistryFetchError("registry answer has no servers list")
        for index, item in enumerate(servers):
            if _depth(item) > MAX_DEPTH:
                read.problems.append(
                    f"page {page}, item {index}: nests deeper than {MAX_DEPTH} levels; left out"
                )
            else:
                read.entries.append(item)
        cursor = _next_cursor(body, page, read)
        if not cursor:
            return read
        if cursor in seen:
            raise RegistryFetchError("registry pagination repeats a cursor")
        seen.add(cursor)
    raise RegistryFetchError(f"registry has more than {MAX_PAGES} pages")


async def fetch_all(http: httpx2.AsyncClient, registry_url: str, *, timeout: float = 10.0) -> list[Any]:
    """`read_registry`'s entries, with its problems logged: what the shared snapshot stores and parses."""
    read = await read_registry(http, registry_url, timeout=timeout)
    for problem in read.problems:
        log.warning("registry read: %s", problem)
    return read.entries
