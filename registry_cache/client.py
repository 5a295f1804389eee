"""Read every entry from an MCP registry (`GET {REGISTRY_URL}/v0.1/servers`, cursor pagination)."""

from __future__ import annotations

from typing import Any

import httpx2

__all__ = ["RegistryFetchError", "fetch_all"]

PAGE_SIZE = 100
MAX_PAGES = 500  # 50,000 servers: far beyond any real registry, small enough to stop a cursor loop


class RegistryFetchError(Exception):
    """The registry could not be read completely; the message is safe to show."""


async def fetch_all(
    http: httpx2.AsyncClient, registry_url: str, *, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """All entries, following `metadata.nextCursor` until it is absent. A partial read is an error:
    serving half a registry would silently drop people's servers."""
    base = registry_url.rstrip("/") + "/v0.1/servers"
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        params: dict[str, str | int] = {"limit": PAGE_SIZE}
        if cursor:
            params["cursor"] = cursor
        try:
            response = await http.get(base, params=params, timeout=timeout)
        except httpx2.HTTPError as exc:
            # A connection refused by the URL rules says why (mcp_clients/egress.py); others name their kind.
            detail = str(exc) if isinstance(exc, httpx2.ConnectError) and str(exc) else type(exc).__name__
            raise RegistryFetchError(f"registry unreachable ({detail})") from None
        if response.status_code != 200:
            raise RegistryFetchError(f"registry answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise RegistryFetchError("registry answered with something that is not JSON") from None
        servers = body.get("servers") if isinstance(body, dict) else None
        if not isinstance(servers, list):
            raise RegistryFetchError("registry answer has no servers list")
        entries.extend(s for s in servers if isinstance(s, dict))
        metadata = body.get("metadata") or {}
        cursor = metadata.get("nextCursor") if isinstance(metadata, dict) else None
        if not cursor:
            return entries
        if cursor in seen:
            raise RegistryFetchError("registry pagination repeats a cursor")
        seen.add(cursor)
    raise RegistryFetchError(f"registry has more than {MAX_PAGES} pages")
