"""Where a request's prompt-cache breakpoints go, so the same prefix is billed once per cache lifetime.

The Messages API caches a prompt's prefix up to each `cache_control` breakpoint (at most 4; prefix order
tools → system → messages; a 1-hour breakpoint may not come after a 5-minute one; cache reads cost 0.1× the
input price, 5-minute writes 1.25×, 1-hour writes 2×: docs "Prompt caching"). The prefix only matches byte
for byte, so:

- tools go in one stable order (server tools such as the tool search tool first, then the rest sorted by
  name), so everyone shown the same set sends identical bytes, whatever order the servers listed them in;
- breakpoint 1 sits on the last tool the model sees up front (a deferred tool may not carry one), with the
  toolset's TTL: a busy shared toolset pays for a 1-hour write, a quiet one does not (`tools_ttl`);
- breakpoint 2 on the system prompt, with the same TTL (it is as stable as the tools; a 1-hour breakpoint
  after a 5-minute one would be refused);
- breakpoint 3 on the newest block of the conversation, by the request's top-level `cache_control`
  ("automatic caching": the API puts it on the last cacheable block), 5 minutes: a turn's steps and the
  thread's next turn follow within minutes, and each request reads what the previous one wrote (the API
  looks back up to 20 blocks from a breakpoint for an entry, and a step adds three or four).

Nothing per request (timestamps, request ids, who asks) is in the tools or the system prompt: the asker's
name is in their own message, after the cached prefix. The transcript is sent exactly as stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["TTL", "CachedRequest", "cached_request", "ephemeral", "tool_order"]

TTL = Literal["5m", "1h"]


def ephemeral(ttl: TTL) -> dict[str, str]:
    """A `cache_control` value; 5 minutes is the API's default, so it is left implicit (shorter bytes)."""
    return {"type": "ephemeral", "ttl": "1h"} if ttl == "1h" else {"type": "ephemeral"}


def tool_order(tool: Mapping[str, Any]) -> tuple[int, str]:
    """Server tools (which have a `type`) first, then custom tools by name."""
    server = "type" in tool and tool.get("type") != "custom"
    return (0 if server else 1, str(tool.get("name", "")))


def _tools(tools: Sequence[Mapping[str, Any]], ttl: TTL) -> list[dict[str, Any]]:
    out = [{k: v for k, v in t.items() if k != "cache_control"} for t in sorted(tools, key=tool_order)]
    loaded = [i for i, t in enumerate(out) if t.get("defer_loading") is not True]
    if loaded:
        out[loaded[-1]]["cache_control"] = ephemeral(ttl)
    return out


@dataclass(frozen=True)
class CachedRequest:
    """The parts of a Messages API request that carry breakpoints."""

    system: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    cache_control: dict[str, str]  # the request's top-level marker: the conversation's newest block


def cached_request(
    system: str, tools: Sequence[Mapping[str, Any]], *, tools_ttl: TTL = "5m"
) -> CachedRequest:
    """System blocks, tools and the top-level marker as described above; inputs are not modified."""
    blocks = [{"type": "text", "text": system, "cache_control": ephemeral(tools_ttl)}] if system else []
    return CachedRequest(blocks, _tools(tools, tools_ttl), ephemeral("5m"))
