"""App Home's part for servers with their own authorization server (`auth: oauth`, SPEC §7): for each such
server the person may use, whether they have connected it, with Connect (a link that starts the
connection in their browser) or Disconnect (forgets their tokens for it and revokes them there).

`connections` gathers the state (server name -> its Connect link, or None when connected); `with_connection`
adds it to the server's section of the tab. Action ids carry the server's position, as block elements'
ids must be unique within a view; the Disconnect button's value is the server's registry name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flows.server_linking import ServerLinking
from registry_cache.model import ServerEntry

__all__ = [
    "HOME_SERVER_CONNECT_PREFIX",
    "HOME_SERVER_DISCONNECT_PREFIX",
    "connections",
    "with_connection",
]

JSON = dict[str, Any]
HOME_SERVER_CONNECT_PREFIX = "home_server_connect:"
HOME_SERVER_DISCONNECT_PREFIX = "home_server_disconnect:"


async def connections(
    linking: ServerLinking, team: str, user: str, servers: Sequence[ServerEntry]
) -> dict[str, str | None]:
    """For each `auth: oauth` server among `servers`: its Connect link, or None when this person has
    connected it."""
    found: dict[str, str | None] = {}
    for entry in servers:
        if entry.governance.auth != "oauth":
            continue
        connected = await linking.connected(team, user, entry)
        found[entry.name] = None if connected else await linking.offer(team, user, entry.name)
    return found


def with_connection(section: JSON, index: int, entry: ServerEntry, found: Mapping[str, str | None]) -> JSON:
    """`section` (the server's block on the tab) with its connection state and button, when it has one."""
    if entry.name not in found:
        return section
    url = found[entry.name]
    if url is None:
        line = "\n:white_check_mark: Connected: I use its tools as you, with your own sign-in there."
        confirm = {
            "title": _plain("Disconnect this server?"),
            "text": _plain("I will forget your tokens for it and revoke them there. Connect again anytime."),
            "confirm": _plain("Disconnect"),
            "deny": _plain("Cancel"),
        }
        button = {
            "type": "button",
            "text": _plain("Disconnect"),
            "action_id": f"{HOME_SERVER_DISCONNECT_PREFIX}{index}",
            "value": entry.name,
            "style": "danger",
            "confirm": confirm,
        }
    else:
        line = "\n:link: Not connected: it has its own sign-in. Connect once to let me use it as you."
        button = {
            "type": "button",
            "text": _plain("Connect"),
            "action_id": f"{HOME_SERVER_CONNECT_PREFIX}{index}",
            "url": url,
            "style": "primary",
        }
    text = dict(section["text"])
    text["text"] = str(text["text"]) + line
    return {**section, "text": text, "accessory": button}


def _plain(text: str) -> JSON:
    return {"type": "plain_text", "text": text}
