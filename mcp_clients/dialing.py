"""Reaching one server for one caller: the connection (with which credentials, which headers) and its listing.

`Dialer.dial` builds a `Connection` to a registry entry that carries the caller's auth flow (whose token
the entry's `auth` says: mcp_clients/gateway_auth.py) and sends, on every request, the entry's remote
headers read from the environment now. `list_all` reads every page of the server's tool listing and what
its screen took out of it.

Errors: `NotCallable` (a `ConnectError`) when the entry's headers cannot be sent from this process (a
variable unset here): a configuration problem of this deployment, not an outage of the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mcp.types import Tool

from mcp_clients.connection import BearerFlow, ConnectError, Connection
from mcp_clients.egress import Resolver
from mcp_clients.questions import Attention, elicitation_callback, server_log
from registry_cache.model import ServerEntry
from registry_cache.remotes import header_values

__all__ = ["MAX_LISTING_PAGES", "Dialer", "NotCallable", "list_all"]

MAX_LISTING_PAGES = 20


class NotCallable(ConnectError):
    """The server cannot be called from this process (a header variable unset here): not an outage."""


@dataclass(frozen=True)
class Dialer:
    """What every connection of a gateway shares."""

    timeout: float
    resolver: Resolver | None
    environ: Mapping[str, str]
    max_body_bytes: int

    def dial(self, entry: ServerEntry, flow: BearerFlow, attention: Attention | None = None) -> Connection:
        """A connection to `entry` whose requests carry `flow`'s credentials and the entry's headers, and
        whose server's questions go to `attention` (none declared without it)."""
        headers = header_values(entry.headers, self.environ)
        if isinstance(headers, str):
            raise NotCallable(headers)
        return Connection(
            entry.url,
            flow,
            timeout=self.timeout,
            resolver=self.resolver,
            headers=headers,
            max_body_bytes=self.max_body_bytes,
            elicitation=(
                elicitation_callback(entry.short_name, attention.questions)
                if attention is not None and attention.questions is not None
                else None
            ),
            logging=server_log(entry.short_name),
        )


async def list_all(conn: Connection) -> tuple[list[Tool], dict[str, str]]:
    """Every page of the server's listing, and the tools its screen took out of it (tool -> why)."""
    client = await conn.open()
    conn.screen.withheld.clear()
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(MAX_LISTING_PAGES):
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools, dict(conn.screen.withheld)
