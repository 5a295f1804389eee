"""Helpers for `auth: oauth` tests: a registry entry for a third-party server, and a person's browser."""

from __future__ import annotations

from typing import Any

import httpx2

from fixtures.own_as_mcp import ThirdPartyServer
from mcp_clients.server_oauth import Connected, PerServerAuth
from registry_cache.model import GOVERNANCE_KEY, ServerEntry, parse_entries

TEAM = "T0CHATOPS"
BROWSER = "the-browser-that-started"


def raw_entry(
    server: ThirdPartyServer, name: str = "io.example/tickets", **governance: Any
) -> dict[str, Any]:
    gov = {"status": "active", "auth": "oauth", "allowed_groups": ["*"], **governance}
    return {
        "server": {
            "name": name,
            "description": "A ticket tracker with its own authorization server",
            "version": "1.0.0",
            "remotes": [{"type": "streamable-http", "url": server.url}],
        },
        "_meta": {GOVERNANCE_KEY: gov},
    }


def oauth_entry(server: ThirdPartyServer, name: str = "io.example/tickets", **governance: Any) -> ServerEntry:
    entries, skipped = parse_entries([raw_entry(server, name, **governance)])
    assert entries, skipped
    return entries[0]


async def follow(authorization_url: str) -> dict[str, str]:
    """The person's browser at the authorization server: where it is sent back to, as query parameters."""
    async with httpx2.AsyncClient() as browser:
        answer = await browser.get(authorization_url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    return dict(httpx2.URL(answer.headers["location"]).params)


async def connect(
    auth: PerServerAuth, entry: ServerEntry, user: str, *, browser: str = BROWSER, team: str = TEAM
) -> Connected:
    back = await follow(await auth.authorize(team, user, entry, browser=browser))
    return await auth.finish(back.get("state"), back.get("code"), back.get("iss"), browser=browser)
